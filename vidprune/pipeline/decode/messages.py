"""One-line error messages and the reader's notes (warnings) for the decode package."""

from __future__ import annotations

from vidprune.errors import VideoDecodeError

__all__ = ["Notes", "decode_error", "one_line"]


def one_line(exc: BaseException) -> str:
    """A short single-line description of a (PyAV / decord / OS) exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:200]


def decode_error(path: str, cause: str, hint: str) -> VideoDecodeError:
    """``cannot decode video '<path>': <cause>; <hint>``."""
    return VideoDecodeError(f"cannot decode video '{path}': {cause}; {hint}")


class Notes:
    """One-line warnings about one video, in the order they were noted.

    ``items``: the warnings (a list the reader hands out as ``VideoReader.warnings``).
    A note with a ``once_key`` is recorded once per reader. A note marked ``per_pass``
    is only about one reading pass; :meth:`retract_pass_notes` removes those noted
    since a :meth:`checkpoint`, for a pass that is redone.
    """

    def __init__(self) -> None:
        self.items: list[str] = []
        self._once: set[str] = set()
        self._per_pass: list[str] = []

    def add(self, msg: str, once_key: str | None = None, per_pass: bool = False) -> None:
        if once_key is not None:
            if once_key in self._once:
                return
            self._once.add(once_key)
        self.items.append(msg)
        if per_pass:
            self._per_pass.append(msg)

    def remove(self, msg: str | None) -> None:
        """Remove ``msg`` if it was noted (a note about a state that no longer holds)."""
        if msg is not None and msg in self.items:
            self.items.remove(msg)

    def checkpoint(self) -> tuple[int, int, frozenset[str]]:
        """A marker for :meth:`retract_pass_notes` / :meth:`rollback`."""
        return len(self.items), len(self._per_pass), frozenset(self._once)

    def retract_pass_notes(self, mark: tuple[int, int, frozenset[str]]) -> None:
        """Remove the per-pass notes recorded since ``mark`` (their pass is being redone)."""
        for msg in self._per_pass[mark[1] :]:
            self.remove(msg)

    def rollback(self, mark: tuple[int, int, frozenset[str]]) -> None:
        """Forget every note since ``mark`` (work that was only a check, not part of the read)."""
        del self.items[mark[0] :]
        del self._per_pass[mark[1] :]
        self._once = set(mark[2])
