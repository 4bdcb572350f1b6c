"""The one per-process encoder cache: every process makes (or receives) each encoder once.

Worker processes of the pipeline (`~astro_galsim.pipeline.describe` with ``workers > 1``) and
of a Dask build (`~astro_galsim.partitions.compute_partition`) keep their encoders here, by
the key of the encoder's identity; an encoder made from a recipe is checked against the key
it was asked for.
"""

__all__ = ['encoder_key', 'cached_encoder', 'keep_encoder', 'encoder_loads']

# encoders of this process by key, and the keys in the order they were made
_ENCODERS = {}
_LOADS = []


def encoder_key(encoder):
    """``'<name>:<sha256>'`` of an encoder's identity: what the cache knows it by."""
    return f"{encoder.identity['name']}:{encoder.identity['sha256']}"


def keep_encoder(encoder):
    """Keep ``encoder`` in this process's cache (as a process pool's initializer does); returns its key."""
    key = encoder_key(encoder)
    if key not in _ENCODERS:
        _ENCODERS[key] = encoder
        _LOADS.append(key)
    return key


def cached_encoder(factory, key):
    """The encoder of ``key``, made by ``factory()`` the first time this process asks for it.

    Raises
    ------
    ValueError
        If the encoder made is not the one of ``key`` (another weights file on this machine).
    """
    encoder = _ENCODERS.get(key)
    if encoder is None:
        if factory is None:
            raise KeyError(f'no encoder {key[:40]}... in this process')
        encoder = factory()
        made = encoder_key(encoder)
        if made != key:
            raise ValueError(f'the encoder made on this worker is {made[:40]}..., not {key[:40]}... as on the '
                             'client: give every machine the same weights file')
        keep_encoder(encoder)
    return encoder


def encoder_loads():
    """The keys of the encoders this process has made or received, in that order."""
    return list(_LOADS)
