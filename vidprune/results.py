"""The one resumable results store: an append-only JSON Lines file, durable line by line, one writer at a time.

``vidprune job`` (one line per question) and ``vidprune eval`` (``samples.jsonl``, one line
per answer and arm) both keep their results in a :class:`ResultsFile`; they differ only
in what identifies a record (``key``).

Durability: each record is appended with a single ``write`` on a file opened ``O_APPEND``
and then ``fsync``-ed, so a line is in the file whole or (after a crash mid-write) as a
torn last line without its newline, which the next ``open()`` cuts off (its item runs
again). The file is locked (``flock``) from ``open()`` to ``close()``: a second run on the
same file fails at once instead of interleaving lines. A rewrite (``rewrite``,
``drop_errors``) goes to a temporary file, ``fsync``-ed and renamed over the old one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ResultsFile", "job_record_key", "check_run_options", "RESUMABLE_CHANGES"]

# Options that say where and in what chunks the work runs, not what is computed: a resume may change them.
RESUMABLE_CHANGES = ("device", "encoder_batch_size", "reuse_prefix")


def job_record_key(record: dict[str, Any]) -> tuple[str, int]:
    """A job result's item: ``(id as JSON, question_index)`` (so 7 and "7" are different ids)."""
    return (json.dumps(record["id"]), int(record["question_index"]))


class ResultsFile:
    """An append-only JSON Lines results file, locked for one run at a time.

    ``open()`` locks it (a second run on the same file fails at once), drops a torn last
    line, and reads the records already there into ``records`` (by ``key(record)``; the
    first line of a key wins); ``append(record)`` writes one line with a single ``write``
    under ``O_APPEND`` and ``fsync``s it.

    Args:
        path: the file (created if missing; its folder must exist).
        key: what identifies a record (default: a job's ``(id, question_index)``).
        writer: who writes it, for the "another ... is writing" message ("vidprune job").
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[dict[str, Any]], Hashable] = job_record_key,
                 writer: str = "vidprune job"):
        self.path = Path(path)
        self.key = key
        self.writer = writer
        self.fd: int | None = None
        self.records: dict[Hashable, dict[str, Any]] = {}
        self.dropped_torn_line = False

    def open(self) -> ResultsFile:
        if self.path.is_dir():
            raise ConfigError(f"--out {str(self.path)!r} is a directory; pass a file path for the results")
        if not self.path.parent.is_dir():
            raise ConfigError(f"the folder of --out {str(self.path)!r} does not exist; create it first")
        self.fd = self._open_locked(self.path)
        data = b""
        while chunk := os.read(self.fd, 1 << 20):
            data += chunk
        if data and not data.endswith(b"\n"):  # a write cut short by a crash: the item runs again
            keep = data.rfind(b"\n") + 1
            os.ftruncate(self.fd, keep)
            os.fsync(self.fd)
            data = data[:keep]
            self.dropped_torn_line = True
        self.records = {}
        for line_no, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                key = self.key(rec)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                self.close()
                raise ConfigError(f"{str(self.path)!r} line {line_no} is not a vidprune result; pass another --out "
                                  "(or delete that line) and run again") from None
            self.records.setdefault(key, rec)
        return self

    def _open_locked(self, path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another {self.writer} is writing {str(path)!r}; wait for it or pass another --out") from None
        return fd

    @property
    def is_open(self) -> bool:
        return self.fd is not None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line: a single write under O_APPEND, then fsync."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self.fd, data)
        while written < len(data):  # regular files take it whole; this only guards a short write
            written += os.write(self.fd, data[written:])
        os.fsync(self.fd)
        self.records[self.key(record)] = record

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the whole file with ``records`` atomically (a new file renamed over the old, still locked)."""
        records = list(records)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        new_fd = self._open_locked(tmp)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        os.close(self.fd)
        self.fd = new_fd
        self.records = {}
        for rec in records:
            self.records.setdefault(self.key(rec), rec)

    def drop_errors(self) -> int:
        """Remove the error records (one atomic rewrite); returns how many."""
        errors = [k for k, r in self.records.items() if "error" in r]
        if errors:
            self.rewrite(r for k, r in self.records.items() if "error" not in r)
        return len(errors)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None

    def __enter__(self) -> ResultsFile:
        return self if self.is_open else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # an abandoned store must not keep its file locked
        self.close()


def check_run_options(run_path: str | os.PathLike, run_info: dict[str, Any], *, has_answers: bool,
                      results: str) -> None:
    """Refuse to resume a results file written with other options; then record ``run_info`` at ``run_path``.

    ``run_info["options"]`` (a dict of what decides the answers) is compared with the one recorded
    by the run before (``run_path``, JSON). Only a results file that holds answers is protected:
    a run that failed before answering anything (it wrote ``run_path`` alone) does not block
    the corrected rerun. ``results``: how to name the results in the message (a file or folder).

    Raises:
        ConfigError: one line naming every option that differs, with its value before and now.
    """
    run_path = Path(run_path)
    if has_answers and run_path.exists():
        try:
            before = json.loads(run_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = {}
        old = before.get("options", {}) if isinstance(before, dict) else {}
        new = run_info.get("options", {})
        differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if old and differ:
            what = ", ".join(f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in differ)
            raise ConfigError(f"{results} holds answers of a run with other options ({what}); "
                              "use another --out, or the same options to resume")
    tmp = run_path.with_name(f".{run_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(run_info, indent=2) + "\n")
    os.replace(tmp, run_path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
