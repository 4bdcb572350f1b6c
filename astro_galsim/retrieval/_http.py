# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Requests shared by every survey source: timeouts, retries with backoff, clear offline errors.

Every request goes through astroquery's request layer (`astroquery.query.BaseQuery`), as
astroquery's own service modules do, so proxies, the user agent and astroquery's test
tooling apply unchanged.
"""
import threading
import time

from astropy import log
from astroquery.query import BaseQuery

from ..config import conf
from .core import RetrievalError

__all__ = []


# the end of the request `call_with_retries` runs in this thread (monotonic seconds), for bounded_reads
_DEADLINE = threading.local()


def bounded_reads(client):
    """Make the answers an astroquery client receives respect the deadline of `call_with_retries`.

    requests waits ``conf.timeout`` for each piece of an answer, not for the whole: a server
    that sends a byte now and then holds a request for ever. The hook added here (before
    astroquery's own, which reads the answer) reads the body piece by piece and abandons it,
    as a read timeout, once ``conf.total_timeout`` has passed. Returns the client.
    """
    client._session.hooks['response'].insert(0, _read_within_deadline)
    return client


def _read_within_deadline(response, *args, **kwargs):
    import requests
    deadline = getattr(_DEADLINE, 'at', None)
    if deadline is None or kwargs.get('stream'):
        return response
    chunks = []
    try:
        while True:
            # read1: what has arrived (up to 1 MB), so that a trickle cannot hold one read for ever
            chunk = response.raw.read1(1 << 20, decode_content=True)   # gzip undone, as requests does
            if not chunk:
                break
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise requests.exceptions.ReadTimeout(
                    f'Read timed out: the answer was still arriving after conf.total_timeout = '
                    f'{conf.total_timeout} s ({sum(map(len, chunks))} bytes so far)', response=response)
    except requests.exceptions.ReadTimeout:
        response.close()
        raise
    except Exception as exc:  # noqa: BLE001 - as requests reports a failed read
        response.close()
        raise requests.exceptions.ConnectionError(exc, response=response) from exc
    # requests keeps a read body here; its content property then returns it without reading again
    response._content = b''.join(chunks)
    response._content_consumed = True
    return response


class HTTPClient(BaseQuery):
    """A minimal astroquery service: GET a URL with the timeouts `call_with_retries` gives."""

    def __init__(self):
        super().__init__()
        bounded_reads(self)

    def get(self, url, *, params=None, timeout):
        # astroquery (0.4.11) has no public call that GETs a service URL: BaseQuery._request is
        # the protected method its service classes are written on (its template module and
        # the SDSS, hips2fits... modules call it), so a BaseQuery subclass calls it here too.
        # The public SDSS.get_images downloads whole frames through astropy's download cache
        # with astropy's timeouts, bypassing this package's cache and retries, and nothing
        # public serves the SkyServer or Legacy Surveys JPEG cutouts.
        return self._request('GET', url, params=params, timeout=timeout, cache=False)


def _transient_errors():
    import requests
    from astroquery.exceptions import TimeoutError as AQTimeoutError
    return (requests.exceptions.Timeout, requests.exceptions.ConnectionError, AQTimeoutError,
            TimeoutError, ConnectionError)


class _TransientStatus(Exception):
    def __init__(self, status):
        super().__init__(f'HTTP {status}')
        self.status = status


def call_with_retries(func, what):
    """Call ``func(timeout)`` (a request); retry transient failures with exponential backoff.

    ``timeout`` is ``(connect, read)`` seconds. A connection that is refused or a host that
    cannot be resolved (no network, or the service is down) is not retried; every attempt
    and pause fits within ``conf.total_timeout``, and each retry is logged. The first pause
    is ``conf.retry_backoff`` seconds, doubled after every failed attempt.
    """
    transient = _transient_errors() + (_TransientStatus,)
    attempts = max(0, int(conf.max_retries)) + 1
    started = time.monotonic()
    deadline = started + float(conf.total_timeout)
    last, tried = None, 0
    for attempt in range(attempts):
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            tried += 1
            _DEADLINE.at = deadline
            try:
                response = func((min(float(conf.connect_timeout), remaining), min(float(conf.timeout), remaining)))
            finally:
                _DEADLINE.at = None
            status = getattr(response, 'status_code', 200)
            if status == 429 or (status is not None and status >= 500):
                raise _TransientStatus(status)
            return response
        except transient as exc:
            last = exc
            if _unreachable(exc):
                raise RetrievalError(
                    f'{what}: could not connect to {_host_of(exc)} ({_cause(exc)}). There is no network '
                    'connection or the service is down: check the connection (and any proxy) and try '
                    'again later. Galaxies already in a database are looked up by id or position '
                    'without the network.') from exc
            delay = float(conf.retry_backoff) * 2 ** attempt
            if attempt + 1 < attempts and time.monotonic() + delay < deadline:
                log.warning(f'{what}: attempt {attempt + 1} of {attempts} failed ({_cause(exc)}); '
                            f'retrying in {delay:g} s')
                time.sleep(delay)
            else:
                break
    kind = 'timed out' if 'timeout' in type(last).__name__.lower() or 'timed out' in str(last) \
        else f'failed ({type(last).__name__}: {last})'
    spent = f'all {tried}' if tried == attempts else f'{tried}'
    raise RetrievalError(
        f'{what}: the request {kind} in {spent} attempt(s) over {time.monotonic() - started:.0f} s '
        f'(astro_galsim.conf.timeout = {conf.timeout} s per attempt, conf.total_timeout = '
        f'{conf.total_timeout} s, conf.max_retries = {conf.max_retries}). The service may be down or '
        'slow: try again later or raise conf.timeout and conf.total_timeout.') from last


def _unreachable(exc):
    """True for a refused connection or an unknown host: retrying cannot help soon."""
    import requests
    from urllib3.exceptions import NewConnectionError
    if isinstance(exc, requests.exceptions.Timeout) or not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = getattr(exc.args[0], 'reason', None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(exc.__context__, NewConnectionError)


def _host_of(exc):
    from urllib.parse import urlsplit
    url = getattr(getattr(exc, 'request', None), 'url', None)
    return urlsplit(url).netloc if url else 'the service'


def _cause(exc):
    """The innermost reason of a requests error, short: 'Connection refused', 'Read timed out'..."""
    reason = getattr(exc.args[0], 'reason', None) if exc.args else None
    text = str(reason if reason is not None else exc)
    return text.split(': ', 1)[-1][:200] if ': ' in text else text[:200]


def check_status(response, what):
    """Raise `RetrievalError` for an HTTP error status."""
    status = getattr(response, 'status_code', 200)
    if status is not None and status >= 400:
        raise RetrievalError(f'{what}: the service answered HTTP {status}')


def get(url, what, *, params=None):
    """GET ``url`` with retries; the response, whatever its status (callers check it)."""
    client = HTTPClient()
    return call_with_retries(lambda timeout: client.get(url, params=params, timeout=timeout), what)
