"""The child side of :mod:`vidprune.pipeline.decode.decord_guard`: a process that runs decord calls.

Run as a script by path (``python _decord_child.py [--init module:function]``), never
imported by the package: it imports only the standard library, numpy and decord, so
it starts in well under a second (importing ``vidprune`` would pull in torch).

Protocol, over stdin (requests) and the original stdout (replies): each message is an
8-byte little-endian length followed by a pickle. The child first sends
``("ready", decord_version)`` (or ``("error", reason)`` and exits), then answers every
request ``(op, args)`` with ``("ok", result)`` or ``("error", one-line reason)``:

- ``("open", (path, threads))`` -> ``(reader_id, num_frames)``
- ``("timestamps", (reader_id,))`` -> ``(N, 2)`` float64 array (start, end seconds)
- ``("batch", (reader_id, indices))`` -> ``(K, H, W, 3)`` uint8 array
- ``("close", (reader_id,))`` -> None

It exits on end of input. File descriptor 1 is pointed at stderr after start-up, so
that whatever native code prints cannot corrupt the replies.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys

HEADER = struct.Struct("<Q")


def read_exact(stream, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _send(out, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def main(argv: list[str]) -> int:
    try:  # a native crash here is reported as the exit code; a core dump would only delay that
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # native prints now go to stderr, not into the replies
    inp = sys.stdin.buffer
    try:
        if len(argv) == 2 and argv[0] == "--init":  # e.g. a test's hook that changes decord
            module, _, func = argv[1].partition(":")
            getattr(importlib.import_module(module), func)()
        import decord
        import numpy as np
    except BaseException as exc:  # noqa: BLE001 - report any start-up failure to the parent
        _send(out, ("error", _one_line(exc)))
        return 1
    _send(out, ("ready", getattr(decord, "__version__", "?")))

    readers: dict[int, object] = {}
    next_id = 0
    while True:
        header = read_exact(inp, HEADER.size)
        if header is None:
            return 0
        body = read_exact(inp, HEADER.unpack(header)[0])
        if body is None:
            return 0
        op, args = pickle.loads(body)
        try:
            if op == "open":
                path, threads = args
                vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
                next_id += 1
                readers[next_id] = vr
                result: object = (next_id, len(vr))
            elif op == "timestamps":
                vr = readers[args[0]]
                result = np.asarray(vr.get_frame_timestamp(list(range(len(vr)))), dtype=np.float64)
            elif op == "batch":
                vr = readers[args[0]]
                batch = vr.get_batch(list(args[1]))
                if hasattr(batch, "asnumpy"):
                    batch = batch.asnumpy()
                result = np.ascontiguousarray(batch)
            elif op == "close":
                readers.pop(args[0], None)
                result = None
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001 - decord raises DECORDError, RuntimeError, AssertionError...
            _send(out, ("error", _one_line(exc)))
        else:
            _send(out, ("ok", result))


if __name__ == "__main__":
    # Run by path, Python put this file's folder first on sys.path; the modules there are not
    # meant to be imported by their bare names.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
