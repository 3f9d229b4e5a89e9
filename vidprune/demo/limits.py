"""The demo's defaults and limits, each with the reason for its value (no heavy imports here)."""

__all__ = [
    "DEFAULT_PORT", "DEFAULT_MAX_SESSIONS", "DEFAULT_WINDOW_S", "DEFAULT_FRAME_RATE", "CAPTURE_MAX_SIDE",
    "CAPTURE_JPEG_QUALITY", "PREVIEW_JPEG_QUALITY", "MAX_FRAME_BYTES", "MAX_FRAME_PIXELS", "MAX_MESSAGE_BYTES",
    "MAX_TEXT_MESSAGE_CHARS", "OUTBOX_LIMIT", "STATS_INTERVAL_S", "HEARTBEAT_S",
]

DEFAULT_PORT = 8765
# Each tab holds a memory and competes for the one model thread; a handful keeps answers quick.
DEFAULT_MAX_SESSIONS = 4
# "What has the camera seen in the last minute?"
DEFAULT_WINDOW_S = 60.0
# One frame a second: a 7B model's vision tower keeps up on a CPU, and a minute is 60 frames.
DEFAULT_FRAME_RATE = 1.0
# The page scales frames to at most this many pixels on the longer side before sending
# (the towers see 224–336 px; 640 px keeps the overlay legible).
CAPTURE_MAX_SIDE = 640
CAPTURE_JPEG_QUALITY = 0.8  # canvas.toBlob quality: ~40 kB per 640x480 frame
PREVIEW_JPEG_QUALITY = 80  # server-source frames sent back to the pages as previews
# The page sends frames at most 640 px wide (tens of kB as JPEG); 1 MiB still admits a
# full-HD JPEG at high quality, and keeps one socket from filling the server's memory.
MAX_FRAME_BYTES = 1 << 20
# Full HD: the vision tower sees 224–336 px, so larger frames only cost decode time.
MAX_FRAME_PIXELS = 1920 * 1080
# A socket message above this is cut off by aiohttp (close code 1009, "message too big");
# between MAX_FRAME_BYTES and this, a frame is refused with an error message and the session goes on.
MAX_MESSAGE_BYTES = 4 * MAX_FRAME_BYTES
# Room for a question of vidprune.qa.MAX_QUESTION_CHARS (4000) characters with JSON escapes
# (up to 6 characters each, \uXXXX) plus the envelope.
MAX_TEXT_MESSAGE_CHARS = 6 * 4000 + 1024
# Messages waiting to go to one tab; beyond this, new ones are dropped (a tab that stopped reading).
OUTBOX_LIMIT = 512
STATS_INTERVAL_S = 1.0  # how often each tab gets fresh stats (the memory ages out between frames)
HEARTBEAT_S = 20.0  # WebSocket pings: a vanished tab is noticed (and its memory freed) within ~2 of these
