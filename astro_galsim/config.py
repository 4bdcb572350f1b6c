"""Configuration items of astro_galsim, settable in the user's astropy config file.

Each item lives in the ``[config]`` section of ``astro_galsim.cfg`` in the astropy
configuration directory, or can be changed for a session::

    >>> from astro_galsim import conf
    >>> with conf.set_temp('timeout', 30.0):
    ...     conf.timeout
    30.0

The settings of each survey source live in that source's own namespace, for example
``astro_galsim.retrieval.sdss.conf.data_release``.
"""
from astropy import config as _config

__all__ = ['Conf', 'conf']


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `astro_galsim`."""

    cache_dir = _config.ConfigItem(
        '',
        'Directory for downloaded frames and finished cutouts. Empty means a folder '
        '"astro_galsim" inside the astropy cache directory.',
        cfgtype='string')
    data_release = _config.ConfigItem(
        17, 'Deprecated: set data_release in the [retrieval.sdss] section instead. A value other than '
        '17 here still selects the SDSS data release, with a deprecation warning.', cfgtype='integer')
    timeout = _config.ConfigItem(
        60.0, 'Seconds a request to a remote service may wait for data before the attempt is abandoned.',
        cfgtype='float')
    connect_timeout = _config.ConfigItem(
        3.0, 'Seconds a request may take to connect to a remote service.', cfgtype='float')
    total_timeout = _config.ConfigItem(
        120.0, 'Seconds one request may take over all its attempts and the pauses between them.',
        cfgtype='float')
    max_retries = _config.ConfigItem(
        3, 'How many times a failed download is retried, with exponential backoff.', cfgtype='integer')
    retry_backoff = _config.ConfigItem(
        1.0, 'Seconds before the first retry of a failed request; doubled after every further failure.',
        cfgtype='float')
    download_workers = _config.ConfigItem(
        4, 'How many downloads run at the same time.', cfgtype='integer')
    batch_size = _config.ConfigItem(
        256, 'Images preprocessed and encoded together in one batch.', cfgtype='integer')
    num_threads = _config.ConfigItem(
        0, 'Threads torch may use for the encoder; 0 leaves torch its default.', cfgtype='integer')
    workers = _config.ConfigItem(
        1, 'Processes that prepare (segment and normalise) and encode images in SimilaritySearch.add, '
        'embed and query; each encodes the galaxies it has prepared, with one torch thread. More than '
        '1 pays off from a hundred images.', cfgtype='integer')
    encoder_precision = _config.ConfigItem(
        'auto', 'Arithmetic of the encoder: "bfloat16" (about twice as fast on CPUs with native '
        'bfloat16, vectors within about 0.002 of float32), "float32", or "auto" (bfloat16 where the '
        'CPU has it natively).', cfgtype='option("auto", "bfloat16", "float32")')
    max_image_pixels = _config.ConfigItem(
        25_000_000, 'Largest image (pixels, all planes) read whole or described; a FITS file above it is '
        'refused before its pixels are read, or, where the galaxy position is known, described from a '
        'section around it. 0 means no limit.', cfgtype='integer')
    show_progress = _config.ConfigItem(
        True, 'Show tqdm progress bars on long work.', cfgtype='boolean')


conf = Conf()
