"""The budget, ordering and dedup contract, checked over every registered family (tiny checkpoints).

For each family and budget: with dedup off the stream holds exactly the budget; with dedup
at most the budget; units in temporal order, kept tokens in raster order inside a unit,
each unit's rows equal to the encoder's rows at the kept positions, then the per-video rows.
"""

from __future__ import annotations

import pytest
import torch

from vidprune import VideoQA
from vidprune.video_models import list_families

FRAMES = 4


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = VideoQA.from_pretrained(tiny_checkpoints[family], budget=None, dedup=False, frames=FRAMES)
        return cache[family]

    return get


@pytest.mark.parametrize("family", list_families())
@pytest.mark.parametrize("share", [0.1, 0.25, 0.6])
@pytest.mark.parametrize("dedup", [False, True])
def test_budget_order_and_rows(loaded, random_frames, family, share, dedup):
    from vidprune.pipeline.stages import SelectStage, clip_from_array

    qa = loaded(family)
    frames = random_frames(FRAMES, seed=7)
    frames[2:] = frames[:2]  # the second half repeats the first (whole temporal patches too): dedup drops it
    clip = clip_from_array(frames)
    encoded = qa.encode_stage.process(clip.frames, clip.times_s)
    geometry = qa.llm.geometry
    units = geometry.units(FRAMES)
    full = encoded.features.shape[1] * units + geometry.reserved(units)
    budget = max(geometry.reserved(units) + 1, round(share * full))
    stage = SelectStage(geometry, budget=budget, dedup=dedup, dedup_threshold=0.99)
    pruned = stage.process(encoded, clip)
    n = pruned.tokens.shape[0]
    assert n == pruned.tokens_count["to_llm"] <= budget
    if not dedup:
        assert n == budget
    times = [f["time_s"] for f in pruned.frames]
    assert times == sorted(times) and len(pruned.frames) == units
    rows, extra_per_frame = [], geometry.extra_per_frame
    for t, f in enumerate(pruned.frames):
        assert f["kept"] == sorted(set(f["kept"])) and set(f["duplicates"]).isdisjoint(f["kept"])
        if extra_per_frame:
            rows.append(encoded.extra[t])
        rows.append(encoded.rows[t, torch.tensor(f["kept"], dtype=torch.long)])
    if encoded.video_extra is not None:
        rows.append(encoded.video_extra)
    torch.testing.assert_close(pruned.tokens, torch.cat(rows), rtol=0, atol=0)
    if dedup and share == 0.6:
        assert sum(len(f["duplicates"]) for f in pruned.frames) > 0
