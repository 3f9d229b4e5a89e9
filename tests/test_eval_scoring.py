"""Scoring: option-letter extraction, judge-free matching, the LLM judge over a real local HTTP server,
and aggregation on fixed prediction sets with known accuracies."""

from __future__ import annotations

import pytest
from eval_helpers import JudgeServer, fake_verdict

from vidprune.errors import ConfigError
from vidprune.eval.benchmarks import MULTIPLE_CHOICE, OPEN_ENDED, get_benchmark
from vidprune.eval.methods import Arm, TokenCounts
from vidprune.eval.report import aggregate, csv_table, markdown_table
from vidprune.eval.scoring import (
    JudgeClient,
    JudgeError,
    chat_completions_url,
    contains_answer,
    exact_match,
    extract_option_letter,
    judge_messages,
    normalize_answer,
    parse_judge_reply,
)

OPTS = ["a cat", "a man is running", "a dog", "a bird"]


@pytest.mark.parametrize(
    "response, options, expected",
    [
        ("B", 4, "B"),
        ("b", 4, "B"),
        ("(C)", 4, "C"),
        ("D.", 4, "D"),
        ("[A]", 4, "A"),
        ("**B**", 4, "B"),
        ("  'C'  ", 4, "C"),
        ("C. a dog", OPTS, "C"),
        ("(C) a dog", OPTS, "C"),
        ("D: a bird", OPTS, "D"),
        ("The answer is C.", 4, "C"),
        ("Answer: (B) a man is running", OPTS, "B"),
        ("Best option:(A", 4, "A"),
        ("The best answer is D", 4, "D"),
        ("I think it is (D)", 4, "D"),
        ("The correct option is B, because A is wrong", 4, "B"),
        ("The answer is B, not option A", 4, "B"),  # "answer" outranks "option"
        ("Option A looks plausible, but the answer is C", 4, "C"),
        ("B the dog is running", 4, "B"),
        ("A man is running.", OPTS, "B"),  # "A" is the article: the option text decides
        ("a dog", OPTS, "C"),  # the text of one option
        ("a man is running with a dog", OPTS, ""),  # two options' texts: ambiguous
        ("E", 4, ""),  # beyond the options
        ("The answer is E", 4, ""),
        ("None of the options fit", 4, ""),
        ("", 4, ""),
        ("   ", 4, ""),
        ("I am not sure", 4, ""),
        ("A", 4, "A"),
        ("E", 5, "E"),
        ("It is B or C", 4, ""),  # two standalone letters: no single choice
    ],
)
def test_extract_option_letter(response, options, expected):
    assert extract_option_letter(response, options) == expected


def test_multiple_choice_accuracy_on_a_fixed_prediction_set():
    """Ten predictions, seven of them right once extracted: accuracy 70.0, one unanswered."""
    answers = ["A", "B", "C", "D", "A", "B", "C", "D", "A", "B"]
    predictions = ["A", "(B)", "The answer is C.", "D. a bird", "a cat", "A", "C", "B", "I don't know",
                   "Answer: B"]
    records = []
    for i, (ans, pred) in enumerate(zip(answers, predictions)):
        letter = extract_option_letter(pred, OPTS)
        records.append(_record("videomme", "full", None, i, MULTIPLE_CHOICE, pred, ans, extracted=letter,
                               correct=letter == ans))
    agg = aggregate(records, arms=[Arm("full", None, {})], benchmarks=[get_benchmark("videomme")],
                    counts=TokenCounts(16, 20))
    m = agg["arms"][0]["results"]["videomme"]
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(70.0) and m["value"] == pytest.approx(70.0)
    assert m["no_answer_rate"] == pytest.approx(10.0)
    assert agg["arms"][0]["relative_to_full"] == pytest.approx(100.0)


def test_normalized_exact_match_and_contains():
    assert normalize_answer("The  Two Dogs!") == "2 dogs"
    assert exact_match("two dogs.", "2 dogs") and exact_match("A Guitar", "guitar")
    assert not exact_match("a man playing guitar", "guitar")
    assert contains_answer("A man is playing the guitar.", "guitar")
    assert not contains_answer("guitarist", "guitar")  # whole words only
    assert not exact_match("", "") and not contains_answer("anything", "")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("{'pred': 'yes', 'score': 4}", (True, 4)),
        ("{'pred': 'no', 'score': 4.8}", (False, 4)),  # truncated to an integer, as the protocol's script does
        ('Sure: {"pred": "Yes", "score": 5}', (True, 5)),
        ("{'pred': 'yes', 'score': 7}", (True, 5)),  # clipped to 0-5
        ("pred: no, score: 2", (False, 2)),  # not a dictionary: lenient reading
    ],
)
def test_parse_judge_reply(reply, expected):
    assert parse_judge_reply(reply) == expected


@pytest.mark.parametrize("reply", ["I think it matches", "{'pred': 'maybe', 'score': 3}", "{'pred': 'yes'}"])
def test_parse_judge_reply_rejects_replies_without_a_verdict(reply):
    with pytest.raises(ValueError):
        parse_judge_reply(reply)


def test_chat_completions_url_forms():
    assert chat_completions_url("http://h:8000/v1") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    with pytest.raises(ConfigError, match="http"):
        chat_completions_url("localhost:8000")


def test_judge_over_http_protocol_verdicts_cache_and_retries():
    with JudgeServer(fail_first=2) as server:
        judge = JudgeClient(server.url, "judge-model", api_key="sk-test", backoff_s=0.01)
        v1 = judge.judge("what is moving [yes]", "square", "a white square")
        v2 = judge.judge("what is moving", "square", "a dog")
        again = judge.judge("what is moving [yes]", "square", "a white square")  # cached: no request
    assert (v1.correct, v1.score) == fake_verdict("a white square") and (v2.correct, v2.score) == fake_verdict("a dog")
    assert fake_verdict("a white square") != fake_verdict("a dog")  # the verdict follows the prediction sent
    assert again == v1 and v1.model == "judge-model"
    assert len(server.requests) == 4  # two 500s retried, then one request per distinct answer
    body = server.requests[-1]
    assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 64
    assert body["messages"] == judge_messages("what is moving", "square", "a dog")
    assert "Correct Answer: square\nPredicted Answer: a dog" in body["messages"][1]["content"]
    assert server.headers[-1]["Authorization"] == "Bearer sk-test"


def test_judge_refusal_is_one_clear_error_without_endless_retries():
    with JudgeServer(status=401) as server:
        judge = JudgeClient(server.url, "judge-model", backoff_s=0.01)
        with pytest.raises(JudgeError, match="HTTP 401.*rerun the same command to resume"):
            judge.judge("q", "a", "p")
    assert len(server.requests) == 1 and "Authorization" not in server.headers[0]


def test_judge_unparsable_replies_fail_after_the_attempts():
    with JudgeServer(reply="looks right to me") as server:
        with pytest.raises(JudgeError, match="no 'pred' and 'score'"):
            JudgeClient(server.url, "m", attempts=2, backoff_s=0.01).judge("q", "a", "p")
    assert len(server.requests) == 2


def test_open_ended_aggregate_judge_accuracy_score_and_relative_table():
    """Full: 3 of 4 judged yes (75%), scores 5,5,5,1 (4.0); pruned: 1 of 4 (25%), relative 33.3%."""
    bench = get_benchmark("msvd_qa")
    verdicts = {"full": [(True, 5), (True, 5), (True, 5), (False, 1)],
                "vispruner@64": [(True, 4), (False, 0), (False, 2), (False, 1)]}
    records = []
    for arm, budget in (("full", None), ("vispruner@64", 64)):
        for i, (ok, score) in enumerate(verdicts[arm]):
            records.append(_record("msvd_qa", arm, budget, i, OPEN_ENDED, "square" if i == 0 else "dog", "square",
                                   exact_match=i == 0, contains_answer=i == 0, correct=ok,
                                   judge={"correct": ok, "score": score, "reply": "", "model": "m"}))
    arms = [Arm("full", None, {}), Arm("vispruner", 64, {})]
    agg = aggregate(records, arms=arms, benchmarks=[bench], counts=TokenCounts(1024, 1028), judge={"model": "m"})
    full, pruned = (a["results"]["msvd_qa"] for a in agg["arms"])
    assert agg["benchmarks"]["msvd_qa"]["metric"] == "judge_accuracy"
    assert full["judge_accuracy"] == pytest.approx(75.0) and full["judge_score"] == pytest.approx(4.0)
    assert pruned["judge_accuracy"] == pytest.approx(25.0) and pruned["judge_score"] == pytest.approx(1.75)
    assert full["exact_match"] == pytest.approx(25.0)
    assert agg["arms"][1]["relative_to_full"] == pytest.approx(100 * 25 / 75)
    md = markdown_table(agg)
    assert "| MSVD-QA Acc | MSVD-QA Score |" in md
    assert "| VisPruner | 64 (6.2%) |" in md and "33.3%" in md and "4.00" in md
    rows = csv_table(agg).strip().splitlines()
    assert rows[0].split(",")[-3:] == ["msvd_qa_judge_accuracy", "msvd_qa_judge_score", "relative_to_full"]
    assert len(rows) == 3


def test_without_a_judge_the_table_shows_exact_match():
    records = [_record("tgif_qa", "full", None, i, OPEN_ENDED, p, "cat", exact_match=exact_match(p, "cat"),
                       contains_answer=contains_answer(p, "cat"), correct=None, judge=None)
               for i, p in enumerate(["a cat", "the Cat.", "a black cat sits", "dog"])]
    agg = aggregate(records, arms=[Arm("full", None, {})], benchmarks=[get_benchmark("tgif_qa")])
    m = agg["arms"][0]["results"]["tgif_qa"]
    assert m["metric"] == "exact_match" and m["value"] == pytest.approx(50.0)
    assert m["contains_answer"] == pytest.approx(75.0) and m["judge_accuracy"] is None
    assert "TGIF-QA EM" in markdown_table(agg) and "no judge configured" in markdown_table(agg)


def _record(bench, arm, budget, i, kind, prediction, answer, **fields):
    return {"key": f"{bench}/{arm}/{i}", "benchmark": bench, "arm": arm, "method": arm.split("@")[0], "budget": budget,
            "sample_id": str(i), "kind": kind, "prediction": prediction, "answer": answer,
            "visual_tokens": budget or 1028, "tokens": {"to_llm": budget or 1028},
            "flops": {"llm_prefill_pruned": 1e9, "llm_ratio": 1.0}, "latency_s": {"generate": 0.1, "total": 0.2},
            **fields}
