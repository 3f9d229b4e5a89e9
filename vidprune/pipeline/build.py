"""``build_stages``: the one way every path builds the pipeline's stages from resolved options.

    cfg, info = resolve_config("ckpt/", budget=227)           # no weights
    stages = build_stages(cfg, info)                          # decode + select: no model needed
    stages = build_stages(cfg, info, llm=load_video_llm(...)) # + encode + answer

The in-process :class:`~vidprune.VideoQA`, the Ray actors, ``vidprune eval`` and the demo all
call it, so a stage gets exactly the keyword arguments of its options section
(:meth:`~vidprune.config.VidpruneConfig.section`) and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engines import create_engine
from ..errors import ConfigError
from .stages import AnswerStage, DecodeStage, EncodeStage, SelectStage

if TYPE_CHECKING:
    from ..config import VidpruneConfig
    from ..video_models.base import VideoLLM
    from ..video_models.checkpoint import CheckpointInfo

__all__ = ["Stages", "build_stages"]


@dataclass
class Stages:
    """The stages of one configured pipeline; ``encode`` and ``answer`` need the model (None without it).

    ``config`` is the config they were built from, with the family's frame count filled in.
    """

    config: "VidpruneConfig"
    decode: DecodeStage
    select: SelectStage
    encode: EncodeStage | None = None
    answer: AnswerStage | None = None

    def __iter__(self):
        return iter((self.decode, self.encode, self.select, self.answer))


def build_stages(config: "VidpruneConfig", checkpoint_info: "CheckpointInfo", llm: "VideoLLM | None" = None,
                 **answer_options: Any) -> Stages:
    """The stages of ``config`` for the checkpoint described by ``checkpoint_info``.

    Args:
        config: a config from :func:`~vidprune.config.resolve_config` (validated, frames resolved).
        checkpoint_info: the checkpoint's family, HF config and geometry (no weights).
        llm: the loaded model; without it only the weight-free stages (decode, select) are built.
        answer_options: extra ``generate`` keywords for the answer stage.
    """
    geometry = checkpoint_info.geometry
    if config.frames is None and config.fps is None:  # not from resolve_config: the family's frame count
        config = dataclasses.replace(config, frames=checkpoint_info.family.default_num_frames)
    if llm is not None and llm.geometry != geometry:
        raise ConfigError(f"the loaded model's visual geometry {llm.geometry} differs from the options' {geometry}; "
                          "load it with the same keep_cls / prune_pooled")
    decode = DecodeStage(**config.section("decode"))
    select = SelectStage(geometry, **config.section("select"))
    if llm is None:
        return Stages(config=config, decode=decode, select=select)
    engine = create_engine(llm=llm, seed=config.sample_seed, **config.section("engine")) if config.engine != "hf" else None
    return Stages(config=config, decode=decode, select=select, encode=EncodeStage(llm, **config.section("encode")),
                  answer=AnswerStage(llm, **config.section("generate"), ivtp=config.ivtp(), engine=engine,
                                     **answer_options))
