"""Resumable HTTP downloads: Range requests into a ``.part`` file, checked before trusted.

A download writes ``<name>.part`` beside a small ``<name>.part.json`` that says what the
part belongs to (URL and expected size / checksum). A later run that finds both resumes
with ``Range: bytes=<have>-``; a part that belongs to something else is discarded. A
dropped connection is retried from where it stopped a few times within one run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvideo_cli.core.errors import DownloadError

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between attempts within one run
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def httpx_module() -> Any:
    """The HTTP library huggingface_hub uses (``httpx2`` in 2.x, ``httpx`` in 1.x)."""
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    return httpx


def timeout() -> Any:
    """Connect and read timeouts for every request."""
    return httpx_module().Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)


@dataclass(frozen=True)
class Request:
    """One file to fetch.

    Args:
        url: where the bytes are (redirects are followed).
        what: a short name for messages, e.g. ``vae/3d-vae.pt``.
        identity: what the bytes must be (checksum or URL); a part with another one is
            discarded instead of resumed.
        size: the expected size, when known beforehand.
        headers: extra headers (the hub's token header; never logged).
        refused_fix: the fix to show when the server refuses access (401 / 403).
    """

    url: str
    what: str
    identity: str
    size: int | None = None
    headers: dict[str, str] | None = None
    refused_fix: str = "check that the link still works in a browser"


class _Retry(Exception):
    """A transient failure: try again from where the part ends."""


def sidecar(part: Path) -> Path:
    """The ``.part.json`` that says what a ``.part`` belongs to."""
    return part.with_name(part.name + ".json")


def resumable_bytes(part: Path, request: Request) -> int:
    """Bytes already in ``part`` that a fetch of ``request`` would keep (0 if none)."""
    try:
        meta = json.loads(sidecar(part).read_text(encoding="utf-8"))
        have = part.stat().st_size
    except (OSError, ValueError):
        return 0
    if meta.get("identity") != request.identity or meta.get("size") != request.size:
        return 0
    return have


def _prepare_part(part: Path, request: Request) -> int:
    """Keep a part that belongs to ``request``; start a fresh one otherwise."""
    have = resumable_bytes(part, request)
    if have and request.size is not None and have > request.size:
        have = 0
    if not have:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"")
        meta = {"url": request.url.split("?")[0], "identity": request.identity,
                "size": request.size}
        sidecar(part).write_text(json.dumps(meta), encoding="utf-8")
    return have


def fetch(client: Any, request: Request, part: Path,
          on_bytes: Callable[[int], None] = lambda n: None) -> int:
    """Download ``request`` into ``part``, resuming what is there; return the final size.

    Raises:
        DownloadError: the server refused, answered an HTML page, or kept failing.
    """
    httpx = httpx_module()
    have = _prepare_part(part, request)
    if have:
        log.info("resuming %s at byte %d", request.what, have)
        on_bytes(have)
    last: Exception | None = None
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        time.sleep(delay)
        try:
            return _stream(client, request, part, on_bytes)
        except (_Retry, httpx.TransportError) as exc:
            last = exc
            log.warning("%s: %s; retrying (%d)", request.what, _describe(exc), attempt + 1)
    raise DownloadError(
        f"could not download {request.what} from {_short(request.url)}: {_describe(last)}",
        fix="check the network and rerun the same command; it resumes where it stopped")


def _stream(client: Any, request: Request, part: Path, on_bytes: Callable[[int], None]) -> int:
    offset = part.stat().st_size
    if request.size is not None and offset == request.size:
        return offset
    headers = dict(request.headers or {})
    headers["Accept-Encoding"] = "identity"  # sizes must be the file's, not gzip's
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", request.url, headers=headers, timeout=timeout()) as response:
        _check_status(response, request, offset, part)
        if offset and response.status_code == 200:
            log.info("%s: the server ignored the range; starting over", request.what)
            on_bytes(-offset)
            offset = 0
        total = _total_size(response, offset)
        if request.size is not None and total is not None and total != request.size:
            raise DownloadError(
                f"{request.what} is {total} bytes on the server, but {request.size} were "
                "expected", value=_short(request.url),
                fix="the source changed; rerun the command to plan the download afresh")
        offset = _write_body(response, part, offset, on_bytes)
    expected = total if total is not None else request.size
    if expected is not None and offset != expected:
        raise _Retry(f"connection ended at byte {offset} of {expected}")
    return offset


def _write_body(response: Any, part: Path, offset: int,
                on_bytes: Callable[[int], None]) -> int:
    with open(part, "ab" if offset else "wb") as handle:
        # chunks as they arrive, so a killed run keeps everything it received
        for chunk in response.iter_bytes():
            handle.write(chunk)
            offset += len(chunk)
            on_bytes(len(chunk))
    return offset


def _check_status(response: Any, request: Request, offset: int, part: Path) -> None:
    status = response.status_code
    if status == 416 and offset:
        # the part is longer than the file: it cannot be resumed
        part.write_bytes(b"")
        raise _Retry("the saved part does not fit the file on the server")
    if status in _TRANSIENT_STATUS:
        raise _Retry(f"HTTP {status}")
    if status in (401, 403):
        raise DownloadError(f"the server refused {request.what} (HTTP {status})",
                            value=_short(request.url), fix=request.refused_fix)
    if status == 404:
        raise DownloadError(f"{request.what} was not found (HTTP 404)",
                            value=_short(request.url),
                            fix="check the endpoint or link; the file may have moved")
    if status not in (200, 206):
        raise DownloadError(f"unexpected HTTP {status} for {request.what}",
                            value=_short(request.url), fix="retry later")
    refuse_html(response.headers.get("content-type", ""), request)


def refuse_html(content_type: str, request: Request) -> None:
    """Raise when a server answers a web page where a file was expected."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        raise DownloadError(
            f"{_short(request.url)} answered an HTML page instead of {request.what}",
            fix="the share link now shows a web page (moved, expired or behind a check); "
                "open it in a browser, or fetch the file by hand and place it as the "
                "message names, then rerun")


def _total_size(response: Any, offset: int) -> int | None:
    """The whole file's size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("content-range", "")
    if response.status_code == 206 and "/" in content_range:
        start = content_range.split()[-1].split("-")[0]
        if start.isdigit() and int(start) != offset:
            raise _Retry(f"the server resumed at byte {start}, not {offset}")
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    return int(length) + (offset if response.status_code == 206 else 0)


def _describe(exc: Exception | None) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _short(url: str) -> str:
    """A URL without its query's signature noise, for messages (never carries a token)."""
    return url if len(url) <= 120 else url[:117] + "..."


def check_magic(path: Path, magics: tuple[bytes, ...], what: str, url: str) -> None:
    """Refuse a finished download whose first bytes are not one of ``magics``."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if any(head.startswith(m) for m in magics):
        return
    looks_html = head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<head", b"<?xml"))
    kind = "an HTML page" if looks_html else f"a file starting {head[:8]!r}"
    raise DownloadError(
        f"{_short(url)} gave {kind}, not the expected {what}",
        fix="the share link no longer serves the file directly; open it in a browser, or "
            "fetch the file by hand and place it as the message names, then rerun")


@contextlib.contextmanager
def cloud_client() -> Iterator[Any]:
    """A plain HTTP client for the cloud shares: follows redirects, sends no hub token."""
    httpx = httpx_module()
    with httpx.Client(follow_redirects=True, timeout=timeout()) as client:
        yield client
