"""``slukd calibrate``: the rejection threshold of a student model dir, chosen on its valid split.

    rejection = calibrate("exp/run/student_kd", "data/synthetic/manifests", target_acceptance=0.98)

Every in-domain utterance of the split (the ``unknown`` intent and intents the model does not
know are left out) goes through what prediction does: the model's trimming, the speech check,
the model, the ``unknown`` class. An utterance rejected before any threshold (no speech found,
or the ``unknown`` class won) scores ``-inf``, so the threshold is the highest one under which
the *answers* accept ``target_acceptance`` of the commands. With ``noise_types``, the split is
also heard in noise (each type at each of ``snrs``, on the loudest frame as noisy-command
benchmarks mix, seeded per utterance: :mod:`pipeline.augment.conditions`), and the target holds
for the clean and noisy copies pooled: a threshold chosen on clean commands alone rejects a large
share of the same commands in a noisy room as ``low confidence``. The result is written into the
model dir's ``config.json`` (``rejection``, atomically); ``slukd export`` copies it into the ONNX
metadata, and ``slukd predict`` uses it by default.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.augment.conditions import BabbleBank, NoiseCondition, noisy_waveforms
from pipeline.core.io import file_sha256
from pipeline.data.audio import AudioError
from pipeline.data.batching import pad_sequences
from pipeline.data.manifest import Manifest, ManifestError, find_manifests, read_manifest
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


def rejection_scores(recognizer: IntentRecognizer, waveforms: list[np.ndarray], method: str,
                     vad: VadConfig | None, temperature: float = 1.0, batch_size: int = 16) -> np.ndarray:  # fmt: skip
    """The rejection score of each waveform (at the model's rate) as prediction would see it;
    ``-inf`` where the answer is ``unknown`` before any threshold (no speech, or the ``unknown``
    class won)."""
    labels = recognizer.labels
    probe = Rejection(method=method, temperature=temperature, vad=None if vad is None else vad.to_dict())
    scores = np.full(len(waveforms), -np.inf)
    for start in range(0, len(waveforms), batch_size):
        kept, screened = [], []
        for offset, waveform in enumerate(waveforms[start : start + batch_size]):
            waveform, found = screen(waveform, recognizer.sample_rate, recognizer.trim_silence, vad)
            if found:
                kept.append(start + offset)
                screened.append(waveform)
        if not screened:
            continue
        output = recognizer.forward(*pad_waveforms(screened))
        logits = output.logits
        batch_scores = probe.scores(logits, labels, output.slot_logits or None)
        if UNKNOWN_INTENT in labels:
            batch_scores[logits.argmax(axis=1) == labels.index(UNKNOWN_INTENT)] = -np.inf
        scores[kept] = batch_scores
    return scores


def noisy_copies(waveforms: list[np.ndarray], ids: list[str], manifest: Manifest, noise_types: list[str],
                 snrs: list[float], sample_rate: int) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """The waveforms under each noise type at each SNR (on the loudest frame), by condition name;
    babble is drawn from the split's own other utterances."""
    if not noise_types:
        return {}
    batch, lengths = pad_sequences(waveforms, dtype=torch.float32)
    bank = BabbleBank(manifest, 32, 0, sample_rate) if "babble" in noise_types else None
    copies = {}
    for kind in noise_types:
        for snr in snrs:
            condition = NoiseCondition(kind, float(snr), reference="peak")
            noisy = noisy_waveforms(batch, lengths, ids, condition, 0, bank, sample_rate)
            copies[condition.name] = [noisy[row, : int(lengths[row])].numpy() for row in range(len(ids))]
    return copies


def _no_threshold(model_dir: Path, recognizer: IntentRecognizer, method: str, target_acceptance: float,
                  temperature: float, split: str) -> Rejection:  # fmt: skip
    """A model of one intent and no slots has no confidence threshold: its intent head's softmax is
    always 1 and cross-entropy never trains its one logit, so any intent score would reject a random
    share of the commands. The speech check still answers ``no speech``. (With slots, the ``command``
    score calibrates as usual; an ``unknown`` intent makes it two intents.)"""
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
              temperature: float = 1.0, batch_size: int = 16, noise_types: tuple[str, ...] = (),
              snrs: tuple[float, ...] = (24.0, 12.0)) -> Rejection:  # fmt: skip
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
        noise_types: also hear the split in these noises (of
            :data:`pipeline.augment.conditions.SWEEP_NOISE_TYPES`) and pool them with the clean split.
        snrs: the SNRs (dB, on the loudest 25 ms frame) of those noises.

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
    if len(recognizer.labels.intents) == 1 and method != "command":
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
        waveforms = [recognizer.load(manifest.audio_path(u))[0] for u in commands]
        copies = {
            "clean": waveforms,
            **noisy_copies(
                waveforms,
                [u.id for u in commands],
                Manifest(commands, manifest.path),
                list(noise_types),
                list(snrs),
                recognizer.sample_rate,
            ),
        }
        by_condition = {name: rejection_scores(recognizer, audio, method, vad, temperature, batch_size)
                        for name, audio in copies.items()}  # fmt: skip
    except AudioError as error:
        raise AudioError(f"{manifests[split]}: {error}") from None
    scores = np.concatenate(list(by_condition.values()))
    threshold = calibrate_threshold(scores, target_acceptance)
    accepted = float(np.mean((scores >= threshold) & np.isfinite(scores)))
    per_condition = {name: float(np.mean((values >= threshold) & np.isfinite(values)))
                     for name, values in by_condition.items()}  # fmt: skip
    rejection = Rejection(
        method=method, threshold=threshold, target_acceptance=target_acceptance, temperature=temperature,
        vad=None if vad is None else vad.to_dict(),
        calibration={
            "split": split, "manifest": str(manifests[split]), "manifest_sha256": file_sha256(manifests[split]),
            "utterances": len(commands), "acceptance": accepted,
            "rejected_before_threshold": int(np.isinf(scores).sum()),
            "conditions": per_condition,  # the acceptance of each copy of the split at the threshold
        },
    )  # fmt: skip
    update_config(model_dir, {CONFIG_KEY: rejection.to_dict()})
    logger.info(
        "%s: %s threshold %.6g accepts %.2f%% of %d %s utterances x %d conditions (target %.2f%%): %s",
        model_dir, method, threshold, 100 * accepted, len(commands), split, len(by_condition),
        100 * target_acceptance, ", ".join(f"{name} {100 * value:.1f}%" for name, value in per_condition.items()),
    )  # fmt: skip
    return rejection
