"""Helpers for the eval tests: small real videos, benchmark folders in the published layouts, a judge server.

The judge is a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions shape.
Its verdict is a function of the predicted answer it receives (:func:`fake_verdict`, a hash
of the prediction), so accuracies are known from the records whatever the tiny model answers,
and a runner that sends the judge the wrong text (another arm's prediction, the reference
answer) produces verdicts that do not match its records.
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vidprune.samples import moving_square_frames, write_video

CODECS = {".mp4": ("libx264", "yuv420p"), ".avi": ("mpeg4", "yuv420p"), ".gif": ("gif", "rgb8"),
          ".mkv": ("libx264", "yuv420p")}


def write_clip(path: Path, seed: int = 0, num_frames: int = 12) -> Path:
    """A small real video (a square moving over a textured background) in the container its suffix names."""
    codec, pix_fmt = CODECS[path.suffix.lower()]
    frames = moving_square_frames(num_frames=num_frames, height=64, width=80, square=16, seed=seed)
    return write_video(path, frames, fps=6, codec=codec, pix_fmt=pix_fmt)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


# ------------------------------------------------------------------ open-ended (Video-LLaVA layout)
def qa_pair_benchmark(root: Path, n_videos: int = 2, per_video: int = 2, ext: str = ".mp4",
                      yes_every: int = 2, video_prefix: str = "clip") -> tuple[Path, Path]:
    """``test_q.json`` + ``test_a.json`` + videos: Video-LLaVA's GPT_Zero_Shot_QA layout.

    Every ``yes_every``-th question carries a ``[yes]`` marker in its text (the fake judge
    ignores it: its verdict depends on the prediction only).
    """
    videos = root / "videos"
    qs, ans = [], []
    k = 0
    for v in range(n_videos):
        write_clip(videos / f"{video_prefix}{v}{ext}", seed=v)
        for q in range(per_video):
            marker = " [yes]" if k % yes_every == 0 else ""
            qs.append({"video_name": f"{video_prefix}{v}", "question": f"what is moving here{marker}",
                       "question_id": f"{video_prefix}{v}_{q}"})
            ans.append({"answer": "square", "question_id": f"{video_prefix}{v}_{q}"})
            k += 1
    write_json(root / "test_q.json", qs)
    write_json(root / "test_a.json", ans)
    return root / "test_q.json", videos


# ------------------------------------------------------------------ judge server
def fake_verdict(prediction: str) -> tuple[bool, int]:
    """The fake judge's verdict on one prediction: (correct, score) from a hash of the prediction alone.

    It depends on nothing but the predicted text the judge received, so an arm judged with
    another arm's prediction (or with the reference answer) gets another arm's verdict: the
    sweep tests compare every record's verdict with ``fake_verdict(record["prediction"])``.
    """
    digest = hashlib.sha256(prediction.encode("utf-8")).digest()
    correct = digest[0] % 2 == 0
    return correct, (3 + digest[1] % 3) if correct else digest[1] % 3


def received_prediction(user_message: str) -> str:
    """The predicted answer inside the protocol's user message (``Predicted Answer: ...``)."""
    return user_message.split("Predicted Answer: ", 1)[1].split("\n\nProvide your evaluation", 1)[0]


class JudgeServer:
    """An OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 whose verdict is :func:`fake_verdict`.

    ``fail_first``: answer HTTP 500 to the first N requests; ``status``: answer every request
    with this HTTP error instead. ``requests`` holds every request body and headers.
    """

    def __init__(self, fail_first: int = 0, status: int | None = None, reply: str | None = None):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first, self.status, self.reply = fail_first, status, reply
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.status is not None:
                    return self._send(server.status, {"error": {"message": "refused"}})
                if len(server.requests) <= server.fail_first:
                    return self._send(500, {"error": {"message": "try again"}})
                user = body["messages"][-1]["content"]
                if server.reply is not None:
                    content = server.reply
                else:
                    correct, score = fake_verdict(received_prediction(user))
                    content = f"{{'pred': '{'yes' if correct else 'no'}', 'score': {score}}}"
                self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}]})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
