"""Open-set evaluation: ``slukd evaluate`` on an out-of-domain split -> ``DIR/eval/<split>.json``.

An out-of-domain split is a manifest whose every utterance has the intent ``unknown``
(``python -m data_prep.ood``: ``ood_valid``, ``ood_test``). Its eval file (``slukd-open-set`` v1)
holds, for the model (student, teacher on the transcripts, or cascade) on clean audio:

- ``scores``: per utterance of the out-of-domain split and of the in-domain splits
  (``in_domain_splits``, default ``test``; their ``unknown`` rows, if any, left out): id, kind
  (``ood_kind``; ``in_domain``), the predicted intent, and every score of
  :mod:`pipeline.scoring.open_set` that the model has (``unknown`` only with that intent), and
  ``command`` (:func:`pipeline.scoring.commands.command_scores`) for a model with slot heads;
- ``threshold``: per score, the model's own threshold when its ``config.json`` has a
  ``rejection`` section for that score, else the one that accepts ``acceptance`` (default 98%)
  of the in-domain ``calibration_split`` (default ``valid``);
- ``metrics``: per score, AUROC, FPR at 95% TPR, in-domain false rejections and the rejection
  rate overall and per kind at that threshold (:func:`pipeline.scoring.open_set.open_set_summary`),
  and ``rejected_by_source``: per kind, with non-speech split by sound (silence, noise colour, hum);
  ``method``: the model's own rejection score (its ``rejection`` section), else ``unknown``
  when it has that intent, else ``max_softmax``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.core.devices import resolve_device
from pipeline.core.errors import SlukdError
from pipeline.core.io import file_sha256, read_json, write_json
from pipeline.data.audio import SAMPLE_RATE, AudioError, read_audio
from pipeline.data.batching import WaveformDataset, batches_by_duration, collate_waveforms, pad_sequences
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, find_manifests, read_manifest
from pipeline.data.open_set import UNKNOWN_INTENT, unknown_index
from pipeline.data.vad import DEFAULT_VAD
from pipeline.evaluation.records import store_slot_logits
from pipeline.scoring.commands import command_scores
from pipeline.scoring.open_set import (
    SCORE_METHODS,
    acceptance_scores,
    open_set_summary,
    rejection_by_kind,
    threshold_for_acceptance,
)
from pipeline.serving.model_kinds import TEXT, LoadedModel, load_model, model_kind
from pipeline.serving.rejection import METHODS as REJECTION_METHODS
from pipeline.serving.rejection import default_method as rejection_default_method
from pipeline.serving.rejection import rejection_from_config, screen

logger = logging.getLogger(__name__)

OPEN_SET_FORMAT, OPEN_SET_VERSION = "slukd-open-set", 1
DEFAULT_ACCEPTANCE = 0.98
IN_DOMAIN_KIND = "in_domain"
COMMAND = "command"  # the score of the jointly decoded command (slot heads)


class OpenSetError(SlukdError, ValueError):
    """Data that an open-set evaluation cannot use."""


def is_out_of_domain(manifest: Manifest) -> bool:
    """Whether every utterance of ``manifest`` is ``unknown`` (an out-of-domain split)."""
    return len(manifest) > 0 and all(utterance.intent == UNKNOWN_INTENT for utterance in manifest)


def in_domain_rows(manifest: Manifest) -> Manifest:
    """``manifest`` without its ``unknown`` rows (a mixed valid split, say)."""
    return Manifest([u for u in manifest if u.intent != UNKNOWN_INTENT], manifest.path)


def subset(manifest: Manifest, size: int, seed: int = 0) -> Manifest:
    """A seeded subset of ``size`` utterances in manifest order (all of them for ``size`` 0 or more)."""
    if size <= 0 or size >= len(manifest):
        return manifest
    keep = sorted(np.random.default_rng(seed).permutation(len(manifest))[:size].tolist())
    return Manifest([manifest[i] for i in keep], manifest.path)


@torch.no_grad()
def model_logits(
    model: LoadedModel, manifest: Manifest, device: torch.device, batch_seconds: float = 60.0
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``[N, C]`` float32 logits of the model on the clean utterances (the transcripts for a text
    model), ``[N]`` whether each one reaches the model, and slot -> ``[N, classes]`` slot logits
    (empty without slot heads; NaN for rows that did not reach the model). A student hears what
    prediction gives it (:func:`pipeline.serving.rejection.screen`): its own trimming, and the
    speech check of its ``rejection`` section (the default VAD without one); an input with no
    speech is answered ``unknown`` before any threshold, its row stays zero and its flag False."""
    reached = np.ones(len(manifest), dtype=bool)
    slots: dict[str, np.ndarray] = {}
    if model.input == TEXT:
        texts = [u.transcript for u in manifest]
        if model.text_outputs is None:
            return np.asarray(model.text_logits(texts), np.float32), reached, slots
        logits, slot_logits = model.text_outputs(texts)
        store_slot_logits(slots, slot_logits, list(range(len(manifest))), len(manifest))
        return np.asarray(logits, np.float32), reached, slots
    logits = np.zeros((len(manifest), len(model.labels)), np.float32)
    if model.kind == "student":
        rejection, trim = rejection_from_config(model.config, str(manifest.path))
        vad = DEFAULT_VAD if rejection is None else rejection.vad_config
        sample_rate = model.frontend.sample_rate if model.frontend is not None else SAMPLE_RATE
        waveforms = []
        for index, utterance in enumerate(manifest):
            try:
                waveform, _ = read_audio(manifest.audio_path(utterance), sample_rate)
            except AudioError as error:
                raise OpenSetError(f"{manifest.path}: {error}") from None
            waveform, reached[index] = screen(waveform, sample_rate, trim, vad)
            waveforms.append(waveform)
        kept = np.flatnonzero(reached)
        for start in range(0, len(kept), 32):
            rows = kept[start : start + 32]
            batch, lengths = pad_sequences(
                [torch.from_numpy(np.asarray(waveforms[i], np.float32)) for i in rows]
            )
            output = model.waveform_forward(batch.to(device), lengths.to(device))
            logits[rows] = output.logits.float().cpu().numpy()
            store_slot_logits(slots, _numpy(output.slot_logits), list(rows), len(manifest))
        return logits, reached, slots
    batches = batches_by_duration([u.duration for u in manifest], batch_seconds, 64)
    loader = DataLoader(WaveformDataset(manifest), batch_sampler=batches, collate_fn=collate_waveforms)
    model.module.eval()
    for batch in loader:
        bad = [error for error in batch.errors if error]
        if bad:
            raise OpenSetError(f"{len(bad)} unreadable utterance(s) in {manifest.path}, first: {bad[0]}")
        output = model.waveform_forward(batch.waveforms.to(device), batch.lengths.to(device))
        logits[list(batch.indices)] = output.logits.float().cpu().numpy()
        store_slot_logits(slots, _numpy(output.slot_logits), list(batch.indices), len(manifest))
    return logits, reached, slots


def _numpy(slot_logits: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: values.float().cpu().numpy() for name, values in slot_logits.items()}


def own_rejection(config: dict) -> dict | None:
    """The model dir's ``rejection`` section (method, threshold), when it has one."""
    section = config.get("rejection") if isinstance(config, dict) else None
    return section if isinstance(section, dict) and "threshold" in section else None


def default_method(model: LoadedModel) -> str:
    """The model's own rejection score, else the measured default (:func:`rejection.default_method`)."""
    own = own_rejection(model.config)
    if own and own.get("method") in REJECTION_METHODS:
        return own["method"]
    return rejection_default_method(model.labels)


def score_table(logits: np.ndarray, reached: np.ndarray | None, unknown: int | None,
                slot_logits: dict[str, np.ndarray] | None = None, labels: LabelSet | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Every score the model has, per utterance (``command`` with slot heads); ``-inf`` for rows
    that did not reach the model."""
    methods = [m for m in SCORE_METHODS if m != "unknown" or unknown is not None]
    scores = {method: acceptance_scores(logits, method, unknown) for method in methods}
    if slot_logits and labels is not None:
        scores[COMMAND] = command_scores(labels, logits, slot_logits)
    if reached is not None and not reached.all():
        for values in scores.values():
            values[~reached] = -np.inf
    return scores


def evaluate_open_set(model_dir: str | os.PathLike, data: str | os.PathLike, split: str,
                      in_domain_splits: tuple[str, ...] = ("test",), calibration_split: str = "valid",
                      acceptance: float = DEFAULT_ACCEPTANCE, device: str = "auto",
                      out_dir: str | os.PathLike | None = None, max_utterances: int = 0) -> dict:  # fmt: skip
    """Evaluate a model dir on the out-of-domain ``split`` of ``data`` against its in-domain
    splits, and write ``eval/<split>.json`` (see the module docstring). ``max_utterances`` > 0:
    a seeded subset of that many utterances of each split (a cascade's ASR is the cost).

    Raises:
        OpenSetError: ``split`` is not out-of-domain, or a split is missing.
    """
    model_dir = Path(model_dir)
    manifests = find_manifests(data)
    for name in (split, calibration_split, *in_domain_splits):
        if name not in manifests:
            raise OpenSetError(f"{data}: no {name} split (have {', '.join(manifests)})")
    ood = read_manifest(manifests[split])
    if not is_out_of_domain(ood):
        raise OpenSetError(
            f"{manifests[split]}: not an out-of-domain split (every intent must be {UNKNOWN_INTENT!r})"
        )
    ood = subset(ood, max_utterances)
    start = time.monotonic()
    torch_device = resolve_device(device)
    model = load_model(model_dir, torch_device)
    unknown = unknown_index(model.labels)
    calibration = subset(in_domain_rows(read_manifest(manifests[calibration_split])), max_utterances)
    in_domain = {
        name: subset(in_domain_rows(read_manifest(manifests[name])), max_utterances)
        for name in in_domain_splits
    }
    for name, manifest in {calibration_split: calibration, **in_domain}.items():
        strangers = sorted({u.intent for u in manifest} - set(model.labels.intents))
        if strangers:
            raise OpenSetError(f"{manifests[name]}: intent {strangers[0]!r} is not in {model_dir}'s labels")

    scores_of = {}
    for name, manifest in {"calibration": calibration, split: ood, **in_domain}.items():
        logits, reached, slot_logits = model_logits(model, manifest, torch_device)
        scores_of[name] = score_table(logits, reached, unknown, slot_logits, model.labels)
    own = own_rejection(model.config)
    in_scores = {
        m: np.concatenate([scores_of[name][m] for name in in_domain_splits]) for m in scores_of[split]
    }
    kinds = [str(u.extra.get("ood_kind", "out_of_domain")) for u in ood]
    # the source within a kind for non-speech (silence, pink, hum_60, ...), where rejection must be total
    sources = [
        str(u.extra.get("ood_source", kind)) if kind == "non_speech" else kind
        for u, kind in zip(ood, kinds, strict=True)
    ]
    metrics, thresholds = {}, {}
    for method, out_scores in scores_of[split].items():
        if own and own.get("method") == method:
            # no threshold (a model of one intent): only the speech check rejects
            value = -np.inf if own["threshold"] is None else float(own["threshold"])
            thresholds[method] = {"value": value, "from": "model"}
        else:
            value = threshold_for_acceptance(scores_of["calibration"][method], acceptance)
            thresholds[method] = {
                "value": value,
                "from": f"{calibration_split} at {acceptance:.0%} acceptance",
            }
        metrics[method] = open_set_summary(in_scores[method], out_scores, kinds, thresholds[method]["value"])
        metrics[method]["rejected_by_source"] = rejection_by_kind(
            out_scores, sources, thresholds[method]["value"]
        )
    rows = []
    for name, manifest in {split: ood, **in_domain}.items():
        logits_kind = [
            str(u.extra.get("ood_kind", "out_of_domain")) if name == split else IN_DOMAIN_KIND
            for u in manifest
        ]
        for row, utterance in enumerate(manifest):
            rows.append({"split": name, "id": utterance.id, "kind": logits_kind[row],
                         **{m: _finite(s[row]) for m, s in scores_of[name].items()}})  # fmt: skip
    result = {
        "format": OPEN_SET_FORMAT,
        "version": OPEN_SET_VERSION,
        "model": {"dir": str(model_dir), "kind": model_kind(model_dir), "has_unknown": unknown is not None},
        "split": split,
        "data": {
            "manifest": str(manifests[split]),
            "manifest_sha256": file_sha256(manifests[split]),
            "in_domain_splits": list(in_domain_splits),
            "calibration_split": calibration_split,
            "utterances": len(ood),
            "in_domain_utterances": int(sum(len(m) for m in in_domain.values())),
            "calibration_utterances": len(calibration),
            "max_utterances": max_utterances,
        },
        "settings": {"acceptance": acceptance, "device": str(torch_device)},
        "method": default_method(model),
        "threshold": thresholds,
        "metrics": metrics,
        "scores": rows,
        "seconds": round(time.monotonic() - start, 2),
    }
    target = Path(out_dir) if out_dir is not None else model_dir / "eval"
    write_json(target / f"{split}.json", result)
    main = metrics[result["method"]]
    logger.info("%s (%s): AUROC %.4f, FPR@95TPR %.3f, rejected %.3f, in-domain false rejections %.3f -> %s",
                split, result["method"], main["auroc"], main["fpr_at_95_tpr"], main["out_of_domain_rejected"],
                main["in_domain_false_rejections"], target / f"{split}.json")  # fmt: skip
    return result


def _finite(score: float) -> float | None:
    """A score for JSON: ``None`` for one that did not reach the model (``-inf``)."""
    return float(score) if np.isfinite(score) else None  # unrounded: the metrics' own numbers


def read_open_set(path: str | os.PathLike) -> dict | None:
    """An open-set eval file, or ``None`` when ``path`` holds another kind of eval file."""
    data = read_json(path)
    return data if isinstance(data, dict) and data.get("format") == OPEN_SET_FORMAT else None
