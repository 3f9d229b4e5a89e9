"""One ``VideoQA`` asked from several threads at once (issue 24, item 4).

Four threads ask one ``VideoQA`` at the same moment (a barrier releases them together), each
about its own video and question; every answer (ids, kept tokens, IVTP's kept set) must equal
the answer the same ``VideoQA`` gives when asked one question at a time. Without the model's
lock the threads share the vision tower's forward hooks ("the vision tower never ran its encoder
layer"), the tokenizer's padding side, Qwen2.5-VL's positions and IVTP's session.
"""

from __future__ import annotations

import threading

import pytest

from vidprune.qa import VideoQA

QUESTIONS = ["What is moving?", "Describe the colours you see in great detail, please.", "Where is it?",
             "Is anything red?"]
THREADS = 4


def _summary(answer):
    ivtp = answer.report["ivtp"]
    return answer.token_ids, [f["kept"] for f in answer.report["frames"]], ivtp and ivtp["kept"]


@pytest.mark.parametrize("family,options", [
    ("video_llava", dict(budget=100, ivtp_layer=2, ivtp_keep=0.5)),
    ("qwen2_5_vl", dict(budget=60)),
])
def test_threads_asking_one_videoqa_at_once_get_the_sequential_answers(tiny_checkpoints, random_frames, family,
                                                                       options):
    qa = VideoQA.from_pretrained(tiny_checkpoints[family], frames=4, max_new_tokens=6, **options)
    videos = [random_frames(4, seed=40 + i) for i in range(THREADS)]
    sequential = [_summary(qa.ask(v, q)) for v, q in zip(videos, QUESTIONS)]
    start = threading.Barrier(THREADS)
    results: list = [None] * THREADS
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            start.wait(timeout=60)
            for _ in range(2):  # twice each, so encodes and generates of different threads overlap
                results[i] = _summary(qa.ask(videos[i], QUESTIONS[i]))
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert results == sequential
