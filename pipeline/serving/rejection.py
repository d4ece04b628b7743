"""Saying "unknown": rejection scores, a threshold calibrated on valid, and why an input is rejected.

A model's rejection travels with it: ``config.json`` of a model dir holds a ``rejection`` section
(written by ``slukd calibrate``, :mod:`pipeline.serving.calibrate`) and an ONNX export carries the
same JSON in its ``slukd_rejection`` metadata::

    {"method": "max_softmax", "threshold": 0.62, "target_acceptance": 0.98, "temperature": 1.0,
     "vad": {...}, "calibration": {"split": "valid", "utterances": 400, "acceptance": 0.98}}

An input is answered ``"intent": "unknown"`` with a ``reason``, checked in this order:

- ``no speech``: the speech detector (:mod:`pipeline.data.vad`) finds none; the model never runs;
- ``not a command``: the label set has an ``unknown`` intent and it wins;
- ``low confidence``: the rejection score is below the threshold.

Scores (higher: more like a command the model knows), from the logits of one input:

- ``max_softmax``: the top class probability;
- ``energy``: ``T * logsumexp(logits / T)`` (Liu et al., 2020, with the sign that makes it a
  confidence);
- ``unknown``: ``1 - p(unknown)``, for a model trained with an ``unknown`` class;
- ``command``: the log confidence of the jointly decoded command (the intent and every slot;
  :func:`pipeline.scoring.commands.command_scores`), for a model with slot heads: the only score a
  model of one intent has.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.core.errors import SlukdError
from pipeline.data.labels import LabelSet
from pipeline.data.open_set import UNKNOWN_INTENT
from pipeline.data.vad import DEFAULT_VAD, VadConfig, VadError, speech_regions, trim_to_regions
from pipeline.scoring.commands import Command, command_scores

METHODS = ("max_softmax", "energy", "unknown", "command")
DEFAULT_TARGET_ACCEPTANCE = 0.98
NO_SPEECH, NOT_A_COMMAND, LOW_CONFIDENCE = "no speech", "not a command", "low confidence"
CONFIG_KEY = "rejection"  # the section of a model dir's config.json
TRIM_KEY = "trim_silence"  # config.json: whether the model was trained on trimmed audio
ONNX_KEY = "slukd_rejection"  # the ONNX metadata entry (JSON; empty: no rejection)


class RejectionError(SlukdError, ValueError):
    """A rejection setting or section that cannot be used."""


def default_method(labels: LabelSet) -> str:
    """``energy``, with or without an ``unknown`` intent: chosen by measurement
    (benchmarks/results/open_set_small.md, 2026-12-03: on the held-out out-of-domain kinds it had the
    best AUROC of the three intent scores for every student, with or without outlier exposure).
    ``command`` for a model of one intent with slots, whose intent scores are constant (on the pizza
    grammar, docs/results.md: AUROC 0.969 against energy's 0.569)."""
    if len(labels.intents) == 1 and labels.slots:
        return "command"
    return "energy"


def check_method(method: str, labels: LabelSet) -> str:
    """``method`` when it is known and fits the label set (``auto``: :func:`default_method`)."""
    if method == "auto":
        return default_method(labels)
    if method not in METHODS:
        raise RejectionError(f"unknown rejection method {method!r}; choose from auto, {', '.join(METHODS)}")
    if method == "unknown" and UNKNOWN_INTENT not in labels:
        raise RejectionError(f"rejection method 'unknown' needs an {UNKNOWN_INTENT!r} intent in the labels")
    if method == "command" and not labels.slots:
        raise RejectionError("rejection method 'command' needs slots in the labels (a model with slot heads)")
    return method


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def rejection_scores(logits: np.ndarray, method: str, labels: LabelSet, temperature: float = 1.0,
                     slot_logits: dict[str, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """Scores ``[batch]`` of logits ``[batch, intents]`` (and, for ``command``, slot -> ``[batch,
    classes]``); higher means more in-domain."""
    logits = np.asarray(logits, dtype=np.float64)
    method = check_method(method, labels)
    if method == "command":
        if not slot_logits:
            raise RejectionError("rejection method 'command' needs the model's slot logits (slot heads)")
        return command_scores(labels, logits, slot_logits)
    if method == "energy":
        scaled = logits / temperature
        top = scaled.max(axis=-1)
        return temperature * (top + np.log(np.exp(scaled - top[..., None]).sum(axis=-1)))
    probabilities = softmax(logits)
    if method == "unknown":
        return 1.0 - probabilities[..., labels.index(UNKNOWN_INTENT)]
    return probabilities.max(axis=-1)


def calibrate_threshold(
    scores_in_domain: np.ndarray, target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE
) -> float:
    """The highest threshold that accepts (score >= threshold) at least ``target_acceptance`` of
    the in-domain scores: with distinct scores exactly ``ceil(target * n)`` of the ``n``.

    Scores of ``-inf`` stand for inputs rejected before any threshold (no speech, the ``unknown``
    class won); when they alone exceed ``1 - target``, the threshold is ``-inf`` (accept the rest).
    """
    if not 0.0 < target_acceptance <= 1.0:
        raise RejectionError(f"target acceptance must be in (0, 1], got {target_acceptance}")
    scores = np.sort(np.asarray(scores_in_domain, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise RejectionError("no in-domain scores to calibrate a threshold on")
    if np.isnan(scores).any():
        raise RejectionError("in-domain scores contain NaN")
    needed = math.ceil(round(target_acceptance * scores.size, 9))
    return float(scores[max(needed, 1) - 1])


@dataclass
class Rejection:
    """How a model says "unknown" (the ``rejection`` section of its config.json)."""

    method: str = "max_softmax"
    threshold: float | None = None  # None: no threshold (the VAD and the unknown class still answer)
    target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE
    temperature: float = 1.0  # of the energy score
    vad: dict[str, Any] | None = field(default_factory=DEFAULT_VAD.to_dict)  # None: no speech check
    calibration: dict[str, Any] = field(default_factory=dict)  # split, utterances, acceptance measured

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RejectionError(
                f"unknown rejection method {self.method!r}; choose from {', '.join(METHODS)}"
            )
        if self.temperature <= 0:
            raise RejectionError(f"rejection temperature must be > 0, got {self.temperature}")
        try:
            self.vad_config = None if self.vad is None else VadConfig.from_dict(self.vad)
        except (VadError, TypeError) as error:
            raise RejectionError(f"rejection vad: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values["threshold"] is not None and not math.isfinite(values["threshold"]):
            values["threshold"] = -1e30  # JSON has no -inf: a threshold below every score
        return values

    @classmethod
    def from_dict(cls, values: Any, where: str = "rejection") -> Rejection:
        """A saved section; a bad one is a :class:`RejectionError` that names ``where``."""
        if not isinstance(values, dict):
            raise RejectionError(f"{where}: expected a JSON object, got {type(values).__name__}")
        try:
            return cls(**values)
        except TypeError as error:
            raise RejectionError(f"{where}: {error}") from None
        except RejectionError as error:
            raise RejectionError(f"{where}: {error}") from None

    def scores(self, logits: np.ndarray, labels: LabelSet,
               slot_logits: dict[str, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
        return rejection_scores(logits, self.method, labels, self.temperature, slot_logits)

    def reason(self, logits: np.ndarray, labels: LabelSet, command: Command | None = None) -> str | None:
        """Why the model's answer on ``logits [intents]`` is rejected, or None (accepted); the
        ``command`` score is read off the answer's jointly decoded ``command``."""
        if UNKNOWN_INTENT in labels and int(np.argmax(logits)) == labels.index(UNKNOWN_INTENT):
            return NOT_A_COMMAND
        if self.threshold is None:
            return None
        if self.method == "command":
            if command is None:
                raise RejectionError("rejection method 'command' needs the model's slot logits (slot heads)")
            score = command.log_confidence
        else:
            score = float(self.scores(np.asarray(logits)[None], labels)[0])
        return LOW_CONFIDENCE if score < self.threshold else None


def resolve_rejection(
    stored: Rejection | None, threshold: float | str | None, labels: LabelSet
) -> Rejection | None:
    """The rejection one prediction call uses.

    Args:
        stored: the model's own (None: the model has none).
        threshold: ``"auto"`` (the model's own: none stored means no rejection), None (no
            rejection), or a number that overrides the stored threshold (on the stored method's
            score; when nothing is stored, on the max-softmax probability, the meaning a bare
            ``--threshold`` has always had, with the default speech check).
        labels: the model's labels.
    """
    if threshold is None:
        return None
    if isinstance(threshold, str):
        if threshold.strip().lower() == "auto":
            return stored
        try:
            threshold = float(threshold)
        except ValueError:
            raise RejectionError(f"threshold must be 'auto' or a number, got {threshold!r}") from None
    base = stored or Rejection(method="max_softmax")
    return Rejection(**{**asdict(base), "threshold": float(threshold)})


def no_command_reason(intent: str, labels: LabelSet) -> str | None:
    """``not a command`` when the model's own ``unknown`` class won (with or without a rejection)."""
    return NOT_A_COMMAND if intent == UNKNOWN_INTENT and UNKNOWN_INTENT in labels else None


def screen(
    waveform: np.ndarray, sample_rate: int, trim: bool, vad: VadConfig | None
) -> tuple[np.ndarray, bool]:
    """What the model gets of one input, and whether it holds speech (one VAD pass for both).

    ``trim`` cuts leading and trailing non-speech as training did (with the default VAD
    settings, the same as :func:`pipeline.data.vad.trim_silence`); ``vad`` None skips the check.
    """
    found = True
    regions = None
    if vad is not None:
        regions = speech_regions(waveform, sample_rate, vad)
        found = bool(regions)
    if trim:
        if regions is None or vad != DEFAULT_VAD:
            regions = speech_regions(waveform, sample_rate, DEFAULT_VAD)
        waveform = trim_to_regions(waveform, sample_rate, regions)
    return waveform, found


def rejection_from_config(config: dict[str, Any], where: str) -> tuple[Rejection | None, bool]:
    """The ``rejection`` section and the ``trim_silence`` flag of a model dir's config.json
    (absent: no rejection, no trimming, as every model before them)."""
    section = config.get(CONFIG_KEY)
    rejection = None if section is None else Rejection.from_dict(section, f"{where}: {CONFIG_KEY}")
    return rejection, bool(config.get(TRIM_KEY, False))


def rejection_from_metadata(metadata: dict[str, str], where: str) -> tuple[Rejection | None, bool]:
    """:func:`rejection_from_config` of an ONNX export's metadata (``slukd_rejection``, ``trim_silence``)."""
    try:
        section = json.loads(metadata[ONNX_KEY]) if metadata.get(ONNX_KEY) else None
    except ValueError as error:
        raise RejectionError(f"{where}: metadata {ONNX_KEY} is not JSON ({error})") from None
    return rejection_from_config({CONFIG_KEY: section, TRIM_KEY: metadata.get(TRIM_KEY) == "true"}, where)


def rejection_metadata(config: dict[str, Any]) -> dict[str, str]:
    """The ONNX metadata entries of a model dir's config.json (what :func:`rejection_from_metadata` reads)."""
    section = config.get(CONFIG_KEY)
    return {
        ONNX_KEY: "" if section is None else json.dumps(section),
        TRIM_KEY: "true" if config.get(TRIM_KEY) else "false",
    }


__all__ = [
    "CONFIG_KEY",
    "LOW_CONFIDENCE",
    "METHODS",
    "NOT_A_COMMAND",
    "NO_SPEECH",
    "ONNX_KEY",
    "TRIM_KEY",
    "UNKNOWN_INTENT",
    "Rejection",
    "RejectionError",
    "calibrate_threshold",
    "check_method",
    "default_method",
    "no_command_reason",
    "rejection_from_config",
    "rejection_from_metadata",
    "rejection_metadata",
    "rejection_scores",
    "resolve_rejection",
    "screen",
]
