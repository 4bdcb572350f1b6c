"""File safety: files other people open are replaced whole, never seen half-written."""
import contextlib
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

__all__ = ['atomic_output']


@contextmanager
def atomic_output(path, *, suffix='.tmp', sync=False):
    """A binary file to write that takes the place of ``path`` only once it is complete.

    Yields a file opened on a temporary name in the same directory
    (``.<name>.<pid>-<random><suffix>``); when the block ends without error the file is
    closed (and flushed to disk with ``sync``) and renamed over ``path``, else it is
    removed. Readers never see a half-written ``path``. The new file keeps the permissions
    of the file it replaces (or gets the usual ones for a new file, as the umask allows),
    and temporary files left by killed writers of the same ``path`` on this machine are
    removed.
    """
    path = Path(path)
    _remove_stale_temporaries(path, suffix)
    tmp, fd = _create_temporary(path, suffix)
    try:
        with os.fdopen(fd, 'wb') as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # collaborators keep their access
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(path, suffix):
    """A new file ``.<name>.<pid>-<random><suffix>`` beside ``path``, mode 0666 less the umask."""
    while True:
        tmp = path.with_name(f'.{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}')
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _remove_stale_temporaries(path, suffix):
    """Remove the temporary files of writers of ``path`` whose process no longer runs."""
    pattern = re.compile(rf'^\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}{re.escape(suffix)}$')
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.match(entry.name)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by another user
        return True
    return True
