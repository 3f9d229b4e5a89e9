"""Streaming webcam QA in the browser (``vidprune demo``).

A page shows the webcam and sends frames over a WebSocket; the server encodes each one,
prunes it (VisPruner), dedups it against a rolling token memory of the last seconds and
answers questions from that memory, streaming the answer token by token. Needs the
``demo`` extra (aiohttp): ``pip install "vidprune[demo]"``.

Modules: :mod:`.server` (HTTP + WebSocket, sessions), :mod:`.access` (Host allowlist, token),
:mod:`.worker` (the model thread), :mod:`.feed` (frames into a memory, what a frame may cost),
:mod:`.streaming` (token-by-token answers), :mod:`.source` (server-side sources),
:mod:`.limits` (every bound, with its reason), :mod:`.command` (the CLI), ``static/`` (the page).
"""

__all__ = ["DemoServer", "DemoSettings"]


def __getattr__(name: str):
    # Lazy: `vidprune --help` must not need aiohttp.
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
