"""Where a video's bytes come from: a local file, or object storage / HTTP through fsspec, read by byte ranges.

Every byte of a video file that vidprune reads (FFmpeg through PyAV, the MP4 and Matroska
index readers, the format sniffers) goes through :func:`open_bytes`, so the same seeking
reads the same ranges wherever the file lives:

* a local path: the file itself (no user-space buffer). Once the reader knows which byte
  spans decoding will read (the index's sample offsets: :meth:`RangeFile.need`), the
  kernel's read-ahead is switched off for the file (``POSIX_FADV_RANDOM``) and told those
  spans instead (``POSIX_FADV_WILLNEED``), so what is read from disk at a cold cache is what
  FFmpeg reads, and the spans still arrive ahead of the decoder.
* ``s3://``, ``gs://``, ``http(s)://`` (the ``remote`` extra: fsspec, s3fs, gcsfs): a file
  object that fetches byte ranges. A read outside any announced span fetches one small
  block (``REMOTE_BLOCK_BYTES``: headers, index, probing); an announced span is fetched in
  one request (exact spans) or in windows of ``SPAN_WINDOW_BYTES`` as decoding moves
  through it (spans known only as an upper bound, e.g. a Matroska GOP).

``stats["bytes_fetched"]`` counts bytes fetched from remote storage; ``bytes_read`` (bytes
asked for by FFmpeg and the index readers) is counted by the callers.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

from vidprune.errors import VideoDecodeError

__all__ = [
    "REMOTE_SCHEMES",
    "RangeFile",
    "Span",
    "bytes_fetched",
    "check_source",
    "is_remote",
    "open_bytes",
    "source_size",
]

# URL schemes read through fsspec (the ``remote`` extra).
REMOTE_SCHEMES = ("s3", "gs", "gcs", "http", "https")
# Bytes one remote read outside an announced span fetches: the MP4/MKV header and index
# readers ask for 12-16 bytes at a time, FFmpeg for its I/O buffer (64 KiB).
REMOTE_BLOCK_BYTES = 64 * 1024
# Bytes fetched (remote) or announced to the kernel (local) at a time, ahead of the reading
# position, inside a span whose end is only an upper bound (a Matroska GOP): a 32nd of the
# span within these bounds, so what a decoder that stops early had fetched for nothing is at
# most a 32nd of a GOP per seek (~3 %), in few requests.
SPAN_WINDOW_BYTES = (16 * 1024, 1024 * 1024)
# Remote blocks kept (LRU, all videos of the process together): FFmpeg re-reads the header and the tail it probed.
_REMOTE_BLOCKS_KEPT = 16


@dataclass(frozen=True)
class Span:
    """Bytes ``[start, end)`` that decoding will read; ``exact``: all of them (else ``end`` is an upper bound)."""

    start: int
    end: int
    exact: bool = True

    @property
    def window(self) -> int:
        """Bytes fetched / announced at a time inside an inexact span (``SPAN_WINDOW_BYTES``)."""
        low, high = SPAN_WINDOW_BYTES
        return max(low, min(high, (self.end - self.start) // 32))


# URL -> bytes fetched from it by this process (every reader of it: FFmpeg, the index readers, probes).
_FETCHED: dict[str, int] = {}
# (URL, block start) -> bytes: the small blocks read outside announced spans (the header, the index, the
# tail FFmpeg probes), shared by the opens of one video (a reader opens it once per pass); LRU.
_BLOCKS: dict[tuple[str, int], bytes] = {}


def bytes_fetched(path: str) -> int:
    """Bytes this process fetched from the remote video ``path`` so far (all readers together)."""
    return _FETCHED.get(str(path), 0)


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL read through fsspec (``s3://``, ``gs://``, ``https://`` ...)."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def _filesystem(path: str):
    try:
        import fsspec
    except ImportError:
        raise VideoDecodeError(f"cannot read video {path!r}: reading s3://, gs:// and https:// videos needs fsspec; "
                               "install vidprune[remote]") from None
    try:
        fs, target = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as e:
        raise VideoDecodeError(f"cannot read video {path!r}: {_one_line(e)}; install vidprune[remote]") from None
    return fs, target


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 300 else text[:297] + "..."


def check_source(path: str) -> int:
    """The size of ``path`` in bytes; raises :class:`VideoDecodeError` (one line) when it cannot be read.

    Local paths are checked by :class:`~.media.MediaFile`; this is the remote half.
    """
    fs, target = _filesystem(path)
    try:
        info = fs.info(target)
    except FileNotFoundError:  # fsspec's HTTP says this for a refused connection too
        raise VideoDecodeError(f"cannot decode video {path!r}: it does not exist or cannot be reached; "
                               "check the URL and the network") from None
    except Exception as e:  # noqa: BLE001 - network, credentials, DNS: one line whatever the library raised
        raise VideoDecodeError(f"cannot decode video {path!r}: it cannot be reached ({type(e).__name__}: "
                               f"{_one_line(e)}); check the URL, the network and the credentials") from None
    if info.get("type") == "directory":
        raise VideoDecodeError(f"cannot decode video {path!r}: it is a directory; pass a video file")
    size = info.get("size")
    if not size:
        raise VideoDecodeError(f"cannot decode video {path!r}: the server does not say its size or it is empty; "
                               "a video is read by byte ranges, so the server must give its Content-Length")
    return int(size)


def source_size(path: str) -> int:
    """Bytes in the video at ``path`` (local or remote)."""
    return check_source(path) if is_remote(path) else os.path.getsize(path)


def open_bytes(path: str, stats: dict[str, int] | None = None) -> RangeFile:
    """A raw, seekable file object over the video's bytes (local or remote); close it when done."""
    if is_remote(path):
        return _RemoteFile(path, stats)
    return _LocalFile(path)


class RangeFile(io.RawIOBase):
    """A video's bytes, told ahead which spans decoding will read (:meth:`need`)."""

    size: int
    _pos: int  # the read position, set by the subclass's __init__

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def need(self, spans: list[Span]) -> None:
        """Decoding is about to read ``spans`` (in this order)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        return self._pos

    def tell(self) -> int:
        return self._pos


class _LocalFile(RangeFile):
    """A local file; :meth:`need` switches the kernel's read-ahead off and announces the spans instead."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self._pos = 0
        self._random = False
        self._window: Span | None = None  # an inexact span, announced up to ``_announced``
        self._announced = 0
        self.advice: list[tuple[str, int, int]] = []  # what was told to the kernel (tests read it)

    def fileno(self) -> int:
        return self._fd

    def _advise(self, what: str, start: int, length: int) -> None:
        if not hasattr(os, "posix_fadvise"):  # not on macOS / Windows: the kernel reads ahead as it likes
            return
        advice = {"random": os.POSIX_FADV_RANDOM, "willneed": os.POSIX_FADV_WILLNEED}[what]
        try:
            os.posix_fadvise(self._fd, start, length, advice)
        except OSError:
            return
        self.advice.append((what, start, length))

    def need(self, spans: list[Span]) -> None:
        if not self._random:  # from now on the kernel reads what it is asked for, nothing around it
            self._advise("random", 0, 0)
            self._random = True
        self._window = None
        for span in spans:
            if span.exact:
                self._advise("willneed", span.start, span.end - span.start)
            else:  # announced a window at a time as the reads move through it (readinto)
                self._window, self._announced = span, span.start
                self._announce_up_to(span.start)

    def _announce_up_to(self, pos: int) -> None:
        span = self._window
        if span is None or not span.start <= pos < span.end:
            return
        while self._announced < min(span.end, pos + span.window):
            stop = min(span.end, self._announced + span.window)
            self._advise("willneed", self._announced, stop - self._announced)
            self._announced = stop

    def readinto(self, buffer: Any) -> int:
        if self._window is not None:
            self._announce_up_to(self._pos)
        n = os.preadv(self._fd, [buffer], self._pos) if hasattr(os, "preadv") else self._read_at(buffer)
        self._pos += n
        return n

    def _read_at(self, buffer: Any) -> int:
        os.lseek(self._fd, self._pos, os.SEEK_SET)
        return os.readv(self._fd, [buffer])

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _RemoteFile(RangeFile):
    """An object on S3 / GCS / HTTP, read by byte ranges through fsspec; fetched bytes counted in ``stats``."""

    def __init__(self, path: str, stats: dict[str, int] | None) -> None:
        super().__init__()
        self.path = path
        self.size = check_source(path)
        self._fs, self._target = _filesystem(path)
        self._stats = stats if stats is not None else {}
        self._stats.setdefault("bytes_fetched", 0)
        self._pos = 0
        self._span: Span | None = None  # the span being read, fetched up to ``_span_data``'s end
        self._span_start = 0
        self._span_data = b""

    def _fetch(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if end <= start:
            return b""
        try:
            data = self._fs.cat_file(self._target, start=start, end=end)
        except Exception as e:  # noqa: BLE001 - the network failed mid-read: one line
            raise VideoDecodeError(f"cannot decode video {self.path!r}: reading bytes {start}-{end} failed "
                                   f"({type(e).__name__}: {_one_line(e)})") from None
        self._stats["bytes_fetched"] += len(data)
        _FETCHED[self.path] = _FETCHED.get(self.path, 0) + len(data)
        return data

    def need(self, spans: list[Span]) -> None:
        self._span = spans[0] if spans else None  # the decoder reads one span at a time (one seek)
        if self._span is not None:
            first = self._span.end if self._span.exact else min(self._span.end, self._span.start + self._span.window)
            self._span_start, self._span_data = self._span.start, self._fetch(self._span.start, first)

    def _from_span(self, pos: int, n: int) -> bytes | None:
        span = self._span
        if span is None:
            return None
        have_end = self._span_start + len(self._span_data)
        if pos == have_end and pos >= span.end and pos < self.size:
            # the decoder reads on past the span (its lookahead): small steps, not whole blocks
            span = self._span = Span(span.start, min(self.size, pos + max(n, SPAN_WINDOW_BYTES[0])), span.exact)
        if not span.start <= pos < span.end:
            return None
        if pos + n > have_end and have_end < span.end:  # the next window of an inexact span (or a continuation)
            if pos >= have_end:
                self._span_start, self._span_data = pos, b""
                have_end = pos
            more = self._fetch(have_end, min(span.end, max(pos + n, have_end + span.window)))
            keep_from = max(0, pos - self._span_start)  # what is behind the reading position is dropped
            self._span_data = self._span_data[keep_from:] + more
            self._span_start += keep_from
        if pos < self._span_start:
            return None
        offset = pos - self._span_start
        return self._span_data[offset : offset + n] or None

    def _from_blocks(self, pos: int, n: int) -> bytes:
        start = pos - pos % REMOTE_BLOCK_BYTES
        block = _BLOCKS.pop((self.path, start), None)
        if block is None:
            block = self._fetch(start, start + REMOTE_BLOCK_BYTES)
        _BLOCKS[(self.path, start)] = block  # most recently used last
        while len(_BLOCKS) > _REMOTE_BLOCKS_KEPT:
            _BLOCKS.pop(next(iter(_BLOCKS)))
        return block[pos - start : pos - start + n]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self.size - self._pos))
        if n == 0:
            return 0
        done = 0
        while done < n:  # a full read (a block or a window ends inside it: read on)
            data = self._from_span(self._pos, n - done)
            if data is None:
                data = self._from_blocks(self._pos, n - done)
            if not data:
                break
            view[done : done + len(data)] = data
            done += len(data)
            self._pos += len(data)
        return done

