"""Run vidprune's loads with the network refused and report every Hub call they try (a script).

``python tests/hub_calls.py CHECKPOINT`` prints one JSON object. It is started by
``tests/test_hf_internals.py`` in a fresh interpreter with ``HF_HUB_OFFLINE`` (and
``USE_HUB_KERNELS``) unset, so transformers and ``kernels`` behave as they do for a user with a
network. A Python audit hook sees every ``socket.getaddrinfo`` / ``socket.connect`` of the
process (huggingface_hub and ``kernels`` download through Python sockets); one that leaves the
machine is recorded and refused (``OSError``, as on a machine without a network), so nothing
is ever downloaded. Loopback and Unix sockets pass.

Reported: the lookups during vidprune's load and answers (IVTP and prefix reuse on), during the
refused Hub attention implementations, and, as a control that the hook sees Hub calls at all,
during a stock ``from_pretrained(attn_implementation="flash_attention_2")`` without flash-attn
(which transformers with ``kernels`` installed turns into a Hub download).
"""

from __future__ import annotations

import json
import sys

LOOKUPS: list[str] = []


def _host(event: str, args: tuple) -> str:
    address = args[0] if event == "socket.getaddrinfo" else args[1]
    return str(address[0] if isinstance(address, tuple) else address)


def _refuse_the_network(event: str, args: tuple) -> None:
    if event not in ("socket.getaddrinfo", "socket.connect"):
        return
    host = _host(event, args)
    if host.startswith(("127.", "/", "\0")) or host in ("localhost", "::1", ""):
        return
    LOOKUPS.append(f"{event} {host}")
    raise OSError(f"network refused by tests/hub_calls.py: {host}")


def main(checkpoint: str) -> dict:
    import numpy as np

    from vidprune import VideoQA
    from vidprune.errors import ConfigError
    from vidprune.video_models import load_video_llm

    report: dict = {}
    frames = np.random.default_rng(0).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)
    qa = VideoQA.from_pretrained(checkpoint, budget=60, ivtp_layer=1, ivtp_keep=0.5, max_new_tokens=4)
    answers = qa.answer(qa.prepare(frames), ["What is the man holding?", "Why?"])  # prefix reuse
    report["answers"] = len(answers)
    report["use_kernels"] = bool(getattr(qa.llm.model, "use_kernels", False))
    report["vidprune"] = LOOKUPS[:]

    LOOKUPS.clear()
    report["refused"] = []
    for attn in ("flash_attention_2", "kernels-community/flash-attn2"):
        try:
            load_video_llm(checkpoint, attn_implementation=attn)
            report["refused"].append(None)
        except ConfigError as exc:
            report["refused"].append(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, judged by the test
            report["refused"].append(f"not refused by vidprune: {type(exc).__name__}: {str(exc)[:300]}")
    report["refusals"] = LOOKUPS[:]

    from transformers import AutoModelForImageTextToText
    from transformers.utils import is_kernels_available

    LOOKUPS.clear()
    try:
        AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation="flash_attention_2")
    except Exception:  # noqa: BLE001 - ImportError without kernels, a wrapped OSError with them
        pass
    report["control"] = LOOKUPS[:]
    report["kernels_installed"] = bool(is_kernels_available())
    return report


if __name__ == "__main__":
    sys.addaudithook(_refuse_the_network)
    print("HUB_CALLS " + json.dumps(main(sys.argv[1])))
