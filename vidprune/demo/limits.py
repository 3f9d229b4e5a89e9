"""The demo's defaults and limits, each with the reason for its value (no heavy imports here).

Everything a client can make the server spend (bytes, pixels, characters, time, sessions)
is bounded by a constant here; docs/demo.md lists them.
"""

__all__ = [
    "DEFAULT_PORT", "DEFAULT_MAX_SESSIONS", "DEFAULT_WINDOW_S", "DEFAULT_FRAME_RATE", "CAPTURE_MAX_SIDE",
    "PLANNED_FRAME_SIZE",
    "CAPTURE_JPEG_QUALITY", "PREVIEW_JPEG_QUALITY", "MAX_FRAME_BYTES", "MAX_FRAME_PIXELS", "MIN_FRAME_SIDE",
    "MAX_FRAME_ASPECT", "MAX_MESSAGE_BYTES", "MAX_ESCAPED_CHARS_PER_CHAR", "MAX_TEXT_MESSAGE_CHARS", "OUTBOX_LIMIT",
    "STATS_INTERVAL_S", "DEFAULT_CLIENT_TIMEOUT_S", "DEFAULT_IDLE_TIMEOUT_S", "CLOSE_TIMEOUT_S",
    "FRAME_RATE_TOLERANCE", "MAX_PATH_CHARS", "TOKEN_BYTES",
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
# (H, W) the page asks the camera for (app.js: getUserMedia 640x480). A model whose token grid
# comes from the frame size (Qwen2.5-VL) has its memory planned for it; other sizes still work.
PLANNED_FRAME_SIZE = (480, 640)
CAPTURE_JPEG_QUALITY = 0.8  # canvas.toBlob quality: ~40 kB per 640x480 frame
PREVIEW_JPEG_QUALITY = 80  # server-source frames sent back to the pages as previews

# ---- what one frame may cost, checked from the JPEG header before anything is decoded
# The page sends frames at most 640 px wide (tens of kB as JPEG); 1 MiB still admits a
# full-HD JPEG at high quality, and keeps one socket from filling the server's memory.
MAX_FRAME_BYTES = 1 << 20
# Full HD: the vision tower sees 224–336 px, so larger frames only cost decode time
# (and bound the decoded array: 1920 x 1080 x 3 bytes = 6 MB, whatever the file size).
MAX_FRAME_PIXELS = 1920 * 1080
# The processor scales the *short* side up (or down) to the tower's size (224 / 336 px), so
# a frame's cost after resizing grows with its aspect ratio: a 65500x16 JPEG of 50 kB
# became a 917,000 x 224 float tensor (~2.5 GB). 4:1 admits every camera and panorama
# format (32:9 = 3.6) and bounds the resized frame at 4 x the tower's square.
MAX_FRAME_ASPECT = 4.0
# Below this the short side is mostly made up by the upscaling: nothing left to see.
MIN_FRAME_SIDE = 32

# ---- messages
# A socket message above this is cut off by aiohttp (close code 1009, "message too big");
# between MAX_FRAME_BYTES and this, a frame is refused with an error message and the session goes on.
MAX_MESSAGE_BYTES = 4 * MAX_FRAME_BYTES
# JSON escapes a character in at most 12 characters: "\ud83d\ude00" for one emoji (a
# character outside the BMP is a surrogate pair, each \uXXXX); a BMP character needs 6.
MAX_ESCAPED_CHARS_PER_CHAR = 12
# Room for a question of vidprune.qa.MAX_QUESTION_CHARS (4000) characters, each escaped
# as long as JSON allows, plus the envelope.
MAX_TEXT_MESSAGE_CHARS = MAX_ESCAPED_CHARS_PER_CHAR * 4000 + 1024
# Messages waiting to go to one tab; beyond this, new ones are dropped (a tab that stopped
# reading; it is dropped itself once it misses its pings, DEFAULT_CLIENT_TIMEOUT_S).
OUTBOX_LIMIT = 512
STATS_INTERVAL_S = 1.0  # how often each tab gets fresh stats (the memory ages out between frames)

# ---- time a client may hold the server
# A tab must answer the server's WebSocket pings (browsers do so on their own, also in
# background tabs): one that has not answered for this long is not reading and is
# dropped. Only pongs count: data the client sends does not keep it alive.
DEFAULT_CLIENT_TIMEOUT_S = 30.0
# A session that has sent nothing (no frame, no message) for this long gives up its place
# when a new tab finds the server full (with --source, tabs that only watch keep their
# place until someone needs it).
DEFAULT_IDLE_TIMEOUT_S = 120.0
# A closing handshake the client does not answer within this is cut (the socket is aborted).
CLOSE_TIMEOUT_S = 5.0
# Browser frames are held to --fps: a frame is admitted when the rate allows one, with
# this share of a frame interval as slack for the page's timer jitter (the long-run rate
# never exceeds --fps).
FRAME_RATE_TOLERANCE = 0.2

# ---- HTTP
# The page's files have short names; anything longer is refused before touching the file system.
MAX_PATH_CHARS = 256
# The access token: 24 random bytes (192 bits), URL-safe base64 (Jupyter uses 24 bytes hex).
TOKEN_BYTES = 24
