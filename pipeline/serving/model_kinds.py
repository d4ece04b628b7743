"""The kinds of model dir that slukd evaluates, and loading any of them for the evaluation.

:data:`MODEL_KINDS` maps a kind name to a :class:`ModelKind`: how its ``config.json`` is
recognised and how the dir loads into a :class:`LoadedModel`, which reads audio
(``input == WAVEFORM``: a ``waveform_forward``) or text (``input == TEXT``: ``text_logits`` and
``text_forward``). ``student`` dirs load through :mod:`pipeline.serving.model_dir`, ``teacher`` dirs
through :mod:`pipeline.teacher.model`, ``cascade`` dirs (an ASR, then the teacher on its
hypothesis) through :mod:`pipeline.cascade.model`. A new kind is one :func:`register_model_kind` call
with its recogniser and loader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.errors import SlukdError
from pipeline.core.io import read_json
from pipeline.data.labels import LabelSet

WAVEFORM, TEXT = "waveform", "text"  # what a model kind reads


class ModelKindError(SlukdError, ValueError):
    """A folder that is no model dir of a kind slukd evaluates."""


class WaveformOutput(NamedTuple):
    """What an audio-in model returns for a batch of waveforms."""

    logits: Tensor  # [B, C]
    ctc_log_probs: Tensor | None  # [B, T, V] with a CTC head, else None
    lengths: Tensor  # [B] valid frames of ctc_log_probs
    hypotheses: list[str] | None = None  # a cascade's normalised ASR text, one per waveform
    slot_logits: dict[str, Tensor] = {}  # slot -> [B, classes] of a student with slot heads


@dataclass
class LoadedModel:
    """A model dir in memory, as the evaluation sees it: audio in or text in, logits out."""

    kind: str  # a key of MODEL_KINDS
    labels: LabelSet
    config: dict  # its config.json
    input: str  # WAVEFORM or TEXT
    module: nn.Module  # its torch weights: moved between devices for speed, counted for the parameters
    device: torch.device  # where the accuracy passes run
    # Audio in: waveforms [B, S] + lengths [B] -> outputs, on the waveforms' device (the module's).
    waveform_forward: Callable[[Tensor, Tensor], WaveformOutput] | None = None
    # Text in: float32 logits [N, C] of transcripts (the accuracy pass; a cascade's teacher on hypotheses).
    text_logits: Callable[[Sequence[str]], np.ndarray] | None = None
    # Text in: the intent logits and the slot logits (slot -> [N, classes]; empty without slot heads).
    text_outputs: Callable[[Sequence[str]], tuple[np.ndarray, dict[str, np.ndarray]]] | None = None
    # Text in: logits of one batch of transcripts on a device, tokenising included (the speed pass).
    text_forward: Callable[[Sequence[str], torch.device], Tensor] | None = None
    ctc_characters: str | None = None  # the CTC vocabulary when the model has a CTC head
    teacher: Any = None  # the teacher kind's pipeline.teacher.model.Teacher
    parameters: int | None = None  # the parameter count when it is not the module's (weights outside torch)
    # Bytes of the weights by part, with their "total", when they are not model.safetensors alone.
    weights_bytes: dict[str, int] | None = None
    # One utterance at a time on the CPU (a cascade's ASR): speed is measured on the CPU only, at
    # batch 1 (no batch throughput).
    sequential: bool = False
    asr: str | None = None  # a cascade's ASR, for humans
    frontend: Any = None  # a student's front-end (pipeline.frontends.base.FrontEnd)

    def num_parameters(self) -> int:
        """Parameters of the model (``parameters``, else those of ``module``)."""
        if self.parameters is not None:
            return self.parameters
        return int(sum(p.numel() for p in self.module.parameters()))


@dataclass(frozen=True)
class ModelKind:
    """How a kind of model dir is recognised (from its parsed config.json) and loaded."""

    name: str
    input: str  # WAVEFORM (audio in: noise sweep, RTF) or TEXT (gold transcripts in)
    recognise: Callable[[dict], bool]
    load: Callable[[Path, torch.device], LoadedModel]
    # What a cached evaluation must match beyond config.json and model.safetensors (a cascade's
    # ASR and teacher weights); None: nothing more.
    fingerprint: Callable[[Path], dict] | None = None


MODEL_KINDS: dict[str, ModelKind] = {}


def register_model_kind(kind: ModelKind) -> ModelKind:
    """Make a kind of model dir known to :func:`model_kind` and :func:`load_model`."""
    MODEL_KINDS[kind.name] = kind
    return kind


def _is_student_config(config: dict) -> bool:
    from pipeline.serving.model_dir import MODEL_FORMAT

    return config.get("format") == MODEL_FORMAT


@torch.no_grad()
def _load_student(model_dir: Path, device: torch.device) -> LoadedModel:
    from pipeline.serving.model_dir import load_model_dir

    student = load_model_dir(model_dir, device)

    def forward(waveforms: Tensor, lengths: Tensor) -> WaveformOutput:
        with torch.no_grad():
            features, frames = student.frontend(waveforms, lengths)
            output = student.model(features, frames)
        return WaveformOutput(output.logits, output.ctc_log_probs, output.lengths, None, output.slot_logits)

    return LoadedModel(
        "student", student.labels, read_json(model_dir / "config.json"), WAVEFORM, student.model, device,
        waveform_forward=forward, ctc_characters=student.ctc_characters, frontend=student.frontend,
    )  # fmt: skip


def _is_teacher_config(config: dict) -> bool:
    from pipeline.teacher.model import is_teacher_config

    return is_teacher_config(config)


def _load_teacher(model_dir: Path, device: torch.device) -> LoadedModel:
    from pipeline.teacher.model import load_teacher

    teacher = load_teacher(model_dir, device)

    @torch.no_grad()
    def forward(texts: Sequence[str], on: torch.device) -> Tensor:
        return teacher.model(*teacher.batch(teacher.tokenize(texts), on)).logits

    return LoadedModel(
        "teacher", teacher.labels, read_json(model_dir / "config.json"), TEXT, teacher.model, device,
        text_logits=teacher.logits, text_outputs=teacher.outputs, text_forward=forward, teacher=teacher,
    )  # fmt: skip


def _is_cascade_config(config: dict) -> bool:
    from pipeline.cascade.model import CASCADE_FORMAT

    return config.get("format") == CASCADE_FORMAT


def _load_cascade(model_dir: Path, device: torch.device) -> LoadedModel:
    """The ASR on one thread per utterance (so the batch-1 latency is one thread's), with as many
    utterances of a batch in parallel as the process has torch threads; the teacher on ``device``."""
    from pipeline.cascade.model import load_cascade

    cascade = load_cascade(model_dir, str(device), threads=1, workers=max(1, torch.get_num_threads()))

    def forward(waveforms: Tensor, lengths: Tensor) -> WaveformOutput:
        clips = [waveforms[row, :length].float().cpu().numpy() for row, length in enumerate(lengths.tolist())]
        cascade.teacher.device = waveforms.device  # the module is where the waveforms are (see measure_speed)
        output = cascade.predict(clips)
        slots = {
            name: torch.from_numpy(values).to(waveforms.device) for name, values in output.slot_logits.items()
        }
        return WaveformOutput(
            torch.from_numpy(output.logits).to(waveforms.device), None, lengths, output.hypotheses, slots
        )

    def text_logits(hypotheses: Sequence[str]) -> np.ndarray:
        cascade.teacher.device = next(cascade.teacher.model.parameters()).device
        return cascade.classify(hypotheses)

    def text_outputs(hypotheses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cascade.teacher.device = next(cascade.teacher.model.parameters()).device
        return cascade.classify_with_slots(hypotheses)

    return LoadedModel(
        "cascade", cascade.labels, read_json(model_dir / "config.json"), WAVEFORM, cascade.teacher.model, device,
        waveform_forward=forward, text_logits=text_logits, text_outputs=text_outputs,
        parameters=cascade.num_parameters(),
        weights_bytes=cascade.size(), sequential=True, asr=cascade.asr.name,
    )  # fmt: skip


def _cascade_fingerprint(model_dir: Path) -> dict:
    from pipeline.cascade.model import cascade_fingerprint

    return cascade_fingerprint(model_dir)


register_model_kind(ModelKind("student", WAVEFORM, _is_student_config, _load_student))
register_model_kind(ModelKind("teacher", TEXT, _is_teacher_config, _load_teacher))
register_model_kind(ModelKind("cascade", WAVEFORM, _is_cascade_config, _load_cascade, _cascade_fingerprint))


def model_kind(model_dir: str | os.PathLike) -> str:
    """The kind (a key of :data:`MODEL_KINDS`) whose config.json the model dir has; else an error."""
    folder = Path(model_dir)
    path = folder / "config.json"
    if not path.is_file():
        raise ModelKindError(f"{folder}: not a model dir (no config.json)")
    try:
        config = read_json(path)
    except json.JSONDecodeError as error:
        raise ModelKindError(f"{path}: not valid JSON ({error.msg})") from None
    for kind in MODEL_KINDS.values():
        if isinstance(config, dict) and kind.recognise(config):
            return kind.name
    raise ModelKindError(
        f"{folder}: config.json is none of the model kinds slukd evaluates ({', '.join(MODEL_KINDS)})"
    )


def load_model(model_dir: str | os.PathLike, device: torch.device) -> LoadedModel:
    """Load a model dir of any kind in :data:`MODEL_KINDS` onto ``device``."""
    return MODEL_KINDS[model_kind(model_dir)].load(Path(model_dir), device)
