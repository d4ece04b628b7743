"""``slukd calibrate``: the rejection threshold of a student model dir, chosen on its valid split.

    rejection = calibrate("exp/run/student_kd", "data/synthetic/manifests", target_acceptance=0.98)

Every in-domain utterance of the split (the ``unknown`` intent and intents the model does not
know are left out) goes through what prediction does: the model's trimming, the speech check,
the model, the ``unknown`` class. An utterance rejected before any threshold (no speech found,
or the ``unknown`` class won) scores ``-inf``, so the threshold is the highest one under which
the *answers* accept ``target_acceptance`` of the commands. The result is written into the
model dir's ``config.json`` (``rejection``, atomically); ``slukd export`` copies it into the ONNX
metadata, and ``slukd predict`` uses it by default.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline.core.io import file_sha256
from pipeline.data.audio import AudioError
from pipeline.data.manifest import ManifestError, find_manifests, read_manifest
from pipeline.data.vad import DEFAULT_VAD, VadConfig
from pipeline.serving.inference import IntentRecognizer
from pipeline.serving.inputs import pad_waveforms
from pipeline.serving.model_dir import is_student_dir, update_config
from pipeline.serving.rejection import (
    CONFIG_KEY,
    DEFAULT_TARGET_ACCEPTANCE,
    UNKNOWN_INTENT,
    Rejection,
    RejectionError,
    calibrate_threshold,
    check_method,
    screen,
)

logger = logging.getLogger(__name__)


def rejection_scores_of_split(recognizer: IntentRecognizer, files: list[Path], method: str,
                              vad: VadConfig | None, temperature: float = 1.0,
                              batch_size: int = 16) -> np.ndarray:  # fmt: skip
    """The rejection score of each file as prediction would see it; ``-inf`` where the answer is
    ``unknown`` before any threshold (no speech, or the ``unknown`` class won)."""
    labels = recognizer.labels
    probe = Rejection(method=method, temperature=temperature, vad=None if vad is None else vad.to_dict())
    scores = np.full(len(files), -np.inf)
    for start in range(0, len(files), batch_size):
        kept, waveforms = [], []
        for offset, path in enumerate(files[start : start + batch_size]):
            waveform, _ = recognizer.load(path)
            waveform, found = screen(waveform, recognizer.sample_rate, recognizer.trim_silence, vad)
            if found:
                kept.append(start + offset)
                waveforms.append(waveform)
        if not waveforms:
            continue
        logits = recognizer.logits(*pad_waveforms(waveforms))
        batch_scores = probe.scores(logits, labels)
        if UNKNOWN_INTENT in labels:
            batch_scores[logits.argmax(axis=1) == labels.index(UNKNOWN_INTENT)] = -np.inf
        scores[kept] = batch_scores
    return scores


def _no_threshold(model_dir: Path, recognizer: IntentRecognizer, method: str, target_acceptance: float,
                  temperature: float, split: str) -> Rejection:  # fmt: skip
    """A model of one intent (every difference in the slots, like a coffee order) has no confidence
    threshold: its intent head's softmax is always 1 and cross-entropy never trains its one logit, so
    the score would reject a random share of the commands. The speech check still answers ``no
    speech``; an ``unknown`` intent (outlier exposure) makes it two intents, and a threshold again."""
    stored = recognizer.rejection
    vad = DEFAULT_VAD if stored is None else stored.vad_config
    rejection = Rejection(
        method=method, threshold=None, target_acceptance=target_acceptance, temperature=temperature,
        vad=None if vad is None else vad.to_dict(),
        calibration={"split": split, "threshold": "none: the model has one intent, whose score says nothing"},
    )  # fmt: skip
    update_config(model_dir, {CONFIG_KEY: rejection.to_dict()})
    logger.warning(
        "%s: one intent (%s): no confidence threshold (its score is constant); only the speech check rejects",
        model_dir, recognizer.labels.intents[0],
    )  # fmt: skip
    return rejection


def calibrate(model_dir: str | os.PathLike, data: str | os.PathLike, split: str = "valid",
              target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE, method: str = "auto",
              temperature: float = 1.0, batch_size: int = 16) -> Rejection:  # fmt: skip
    """Choose the threshold on ``split`` of ``data`` and write the ``rejection`` section.

    Args:
        model_dir: a student model dir.
        data: a data folder (``DIR/manifests/<split>.jsonl`` or ``DIR/<split>.jsonl``).
        split: never a test split.
        target_acceptance: the share of in-domain utterances to accept.
        method: ``auto`` (``unknown`` when the labels have it, else ``max_softmax``), or one of
            :data:`pipeline.serving.rejection.METHODS`.
        temperature: of the energy score.
        batch_size: utterances per forward pass.

    Raises:
        RejectionError: a bad method or target, or no in-domain utterances in the split.
        ModelDirError, ManifestError, AudioError: the model dir, the manifest or a file.
    """
    model_dir = Path(model_dir)
    if not is_student_dir(model_dir):
        raise RejectionError(
            f"{model_dir}: calibrate takes a student model dir (config.json of slukd-student)"
        )
    manifests = find_manifests(data)
    if split not in manifests:
        raise ManifestError(f"{data}: no {split} split; available: {', '.join(manifests)}")
    recognizer = IntentRecognizer.from_pretrained(model_dir)
    method = check_method(method, recognizer.labels)
    if len(recognizer.labels.intents) == 1:
        return _no_threshold(model_dir, recognizer, method, target_acceptance, temperature, split)
    manifest = read_manifest(manifests[split])
    commands = [u for u in manifest if u.intent != UNKNOWN_INTENT and u.intent in recognizer.labels]
    if not commands:
        raise RejectionError(f"{manifests[split]}: no in-domain utterances to calibrate on")
    if len(commands) < len(manifest):
        logger.info("%s: %d of %d utterances are not commands the model knows (left out)",
                    manifests[split], len(manifest) - len(commands), len(manifest))  # fmt: skip
    stored = recognizer.rejection
    vad = DEFAULT_VAD if stored is None else stored.vad_config
    try:
        files = [manifest.audio_path(u) for u in commands]
        scores = rejection_scores_of_split(recognizer, files, method, vad, temperature, batch_size)
    except AudioError as error:
        raise AudioError(f"{manifests[split]}: {error}") from None
    threshold = calibrate_threshold(scores, target_acceptance)
    accepted = float(np.mean((scores >= threshold) & np.isfinite(scores)))
    rejection = Rejection(
        method=method, threshold=threshold, target_acceptance=target_acceptance, temperature=temperature,
        vad=None if vad is None else vad.to_dict(),
        calibration={
            "split": split, "manifest": str(manifests[split]), "manifest_sha256": file_sha256(manifests[split]),
            "utterances": len(commands), "acceptance": accepted,
            "rejected_before_threshold": int(np.isinf(scores).sum()),
        },
    )  # fmt: skip
    update_config(model_dir, {CONFIG_KEY: rejection.to_dict()})
    logger.info(
        "%s: %s threshold %.6g accepts %.2f%% of %d %s utterances (target %.2f%%)",
        model_dir, method, threshold, 100 * accepted, len(commands), split, 100 * target_acceptance,
    )  # fmt: skip
    return rejection
