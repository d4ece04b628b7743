"""Scoring many student model dirs on the same evaluation sets, each frozen encoder run once.

The ablation (``benchmarks/distill.py``) trains a few dozen students that share one frozen
pretrained encoder (``freeze: encoder``). ``slukd evaluate`` would run that encoder again for
every student, split and condition; here it runs once per (frozen encoder, evaluation set), and
each student then runs only its trainable top (``forward_from_frozen``) on the stored states.
Students without a frozen part (the from-scratch ``transformer``) run whole. The numbers are
those of ``slukd evaluate`` on the same utterances (tests/test_benchmark_scoring.py checks it):

- the waveforms, the front-end and the model are the same (the model dir's own front-end);
- the conditions are :mod:`pipeline.augment.conditions`' (``white`` at an SNR, ``reverb`` at an RT60
  range, ``telephone``), seeded per utterance from (seed, condition, utterance id), so an
  utterance gets the same noise as under ``slukd evaluate --seed S``;
- the robustness subset is :func:`pipeline.evaluation.evaluate.choose_subset`'s noisy subset
  (``--noisy-utterances N``), i.e. the utterances the recipe's own evaluation would pick.

Frozen states are kept in memory, float32, per batch (about 0.6 GB for the ``small`` corpus's
valid and test splits with three conditions on 200 utterances, for Whisper tiny).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional
from torch.utils.data import DataLoader

from pipeline.augment.conditions import NoiseCondition, noisy_waveforms
from pipeline.core.errors import SlukdError
from pipeline.core.io import file_sha256, write_json
from pipeline.data.batching import WaveformDataset, batches_by_duration, collate_waveforms, trim_batch
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.evaluation.command_scores import command_metrics, decoded_intents
from pipeline.evaluation.evaluate import EvaluateConfig, choose_subset
from pipeline.scoring.intervals import Estimate, proportion_estimate
from pipeline.serving.model_dir import LoadedStudent, load_model_dir
from pipeline.training.encoder_cache import cache_identity, frozen_weights_sha256, has_frozen_part

logger = logging.getLogger(__name__)

CLEAN = NoiseCondition("clean")


class ScoringError(SlukdError):
    """An evaluation set that cannot be built (missing manifest, unreadable audio)."""


@dataclass(frozen=True)
class EvalSet:
    """Utterances of one split under one condition; ``name`` is its column in the tables."""

    name: str
    split: str
    condition: NoiseCondition
    manifest: Manifest


@dataclass(frozen=True)
class SetScore:
    """A student's result on one :class:`EvalSet`."""

    accuracy: float
    nll: float
    predicted: tuple[int, ...]  # intent index per utterance, in the set's manifest order
    command_acceptance: float | None = None  # intent and every slot exact; None: labels without slots

    @property
    def utterances(self) -> int:
        return len(self.predicted)

    def estimate(self) -> Estimate:
        """The accuracy with its 95% Wilson interval and the utterances behind it."""
        return proportion_estimate(self.accuracy, self.utterances)

    def to_dict(self) -> dict:
        low, high = self.estimate()[1:3]
        return {"accuracy": self.accuracy, "accuracy_interval": [low, high], "utterances": self.utterances,
                "nll": self.nll, "predicted": list(self.predicted),
                "command_acceptance": self.command_acceptance}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict) -> SetScore:
        return cls(
            float(values["accuracy"]), float(values["nll"]), tuple(int(p) for p in values["predicted"]),
            values.get("command_acceptance"),
        )  # fmt: skip


def evaluation_sets(manifests: dict[str, Path], labels: LabelSet, conditions: Sequence[NoiseCondition],
                    robustness_split: str = "test", robustness_utterances: int = 200,
                    seed: int = 0) -> list[EvalSet]:  # fmt: skip
    """Every split clean (whole), then ``robustness_split`` under each condition on a seeded subset.

    The subset is the noisy subset of :func:`pipeline.evaluation.evaluate.choose_subset` (the same
    utterances as ``slukd evaluate --seed SEED --noisy-utterances N``); ``{split} subset clean``
    is the same subset without noise, so that a condition is compared with clean on the same
    utterances. ``robustness_utterances`` 0 takes the whole split.
    """
    sets = [EvalSet(split, split, CLEAN, read_manifest(path, labels)) for split, path in manifests.items()]
    if not conditions:
        return sets
    if robustness_split not in manifests:
        raise ScoringError(f"no manifest for the robustness split {robustness_split!r}")
    whole = read_manifest(manifests[robustness_split], labels)
    _, chosen = choose_subset(len(whole), EvaluateConfig(seed=seed, noisy_utterances=robustness_utterances))
    subset = Manifest([whole[i] for i in chosen], whole.path)
    sets.append(EvalSet(f"{robustness_split} subset clean", robustness_split, CLEAN, subset))
    sets += [EvalSet(f"{robustness_split} {c.name}", robustness_split, c, subset) for c in conditions]
    return sets


@dataclass
class _Batch:
    waveforms: Tensor  # [B, S] under the set's condition
    lengths: Tensor  # [B] samples
    rows: list[int]  # positions in the set's manifest


class StudentScorer:
    """Scores student model dirs on fixed evaluation sets, sharing every frozen encoder pass.

    Args:
        sets: from :func:`evaluation_sets`.
        device: where the models run.
        seed: seeds the conditions (as ``slukd evaluate --seed``).
        batch_seconds: padded audio seconds per batch.
        max_batch_size: utterances per batch at most.
    """

    def __init__(self, sets: Sequence[EvalSet], device: str | torch.device = "cpu", seed: int = 0,
                 batch_seconds: float = 60.0, max_batch_size: int = 64) -> None:  # fmt: skip
        self.sets = list(sets)
        self.device = torch.device(device)
        self.seed = seed
        self.batch_seconds = batch_seconds
        self.max_batch_size = max_batch_size
        self._audio: dict[tuple[str, bool], list[_Batch]] = {}
        self._frozen: dict[tuple[str, str, bool], list[tuple[Tensor, Tensor]]] = {}
        self.frozen_seconds = 0.0  # time spent running frozen encoders (once per encoder and set)

    def describe(self) -> dict:
        """What the scores depend on besides the model: sets (utterance ids), seed."""
        return {
            "seed": self.seed,
            "sets": [
                {"name": s.name, "split": s.split, "condition": s.condition.name,
                 "ids_sha256": hashlib.sha256("\n".join(u.id for u in s.manifest).encode()).hexdigest()}
                for s in self.sets
            ],
        }  # fmt: skip

    def _batches(self, eval_set: EvalSet, trim_silence: bool = False) -> list[_Batch]:
        """The set's audio under its condition, decoded once (per trimming, as each model was
        trained: ``trim_silence`` in its config.json), in length-sorted batches. As in ``slukd
        evaluate``, the noise is mixed into the whole file and the trimming comes after it."""
        if (eval_set.name, trim_silence) in self._audio:
            return self._audio[eval_set.name, trim_silence]
        manifest = eval_set.manifest
        order = batches_by_duration([u.duration for u in manifest], self.batch_seconds, self.max_batch_size)
        waves = WaveformDataset(manifest, trim_silence=False)
        loader = DataLoader(waves, batch_sampler=order, collate_fn=collate_waveforms)
        batches = []
        for batch in loader:
            bad = [error for error in batch.errors if error]
            if bad:
                raise ScoringError(f"{len(bad)} unreadable utterance(s) in {manifest.path}, first: {bad[0]}")
            ids = [manifest[i].id for i in batch.indices]
            waveforms = noisy_waveforms(batch.waveforms, batch.lengths, ids, eval_set.condition, self.seed)
            lengths = batch.lengths
            if trim_silence:
                waveforms, lengths = trim_batch(waveforms, lengths)
            batches.append(_Batch(waveforms, lengths, list(batch.indices)))
        self._audio[eval_set.name, trim_silence] = batches
        return batches

    def _frozen_states(
        self, student: LoadedStudent, identity: str, eval_set: EvalSet
    ) -> list[tuple[Tensor, Tensor]]:
        """The student's frozen bottom over the set (computed once per frozen identity and set)."""
        trim = bool(student.config.get("trim_silence"))
        key = (identity, eval_set.name, trim)
        if key not in self._frozen:
            start = time.monotonic()
            states = []
            with torch.no_grad():
                for batch in self._batches(eval_set, trim):
                    features, frames = student.frontend(
                        batch.waveforms.to(self.device), batch.lengths.to(self.device)
                    )
                    states.append(student.model.encode_frozen(features, frames))
            self._frozen[key] = states
            self.frozen_seconds += time.monotonic() - start
        return self._frozen[key]

    def logits(self, student: LoadedStudent, eval_set: EvalSet) -> np.ndarray:
        """``[N, C]`` float32 logits of the set's utterances (manifest order)."""
        return self.outputs(student, eval_set)[0]

    @torch.no_grad()
    def outputs(self, student: LoadedStudent, eval_set: EvalSet) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``[N, C]`` float32 intent logits and slot -> ``[N, classes]`` slot logits (manifest order)."""
        batches = self._batches(eval_set, bool(student.config.get("trim_silence")))
        result = np.zeros((len(eval_set.manifest), len(student.labels)), np.float32)
        slots = {name: np.zeros((len(eval_set.manifest), len(classes)), np.float32)
                 for name, classes in student.slot_classes.items()}  # fmt: skip
        model = student.model.eval()
        frozen = None
        if has_frozen_part(model):
            weights = frozen_weights_sha256(model)
            identity = json.dumps(
                cache_identity(model, student.frontend, weights), sort_keys=True, default=str
            )
            frozen = self._frozen_states(student, identity, eval_set)
        for index, batch in enumerate(batches):
            if frozen is not None:
                output = model.forward_from_frozen(*frozen[index])
            else:
                output = model(
                    *student.frontend(batch.waveforms.to(self.device), batch.lengths.to(self.device))
                )
            result[batch.rows] = output.logits.float().cpu().numpy()
            for name, values in output.slot_logits.items():
                slots[name][batch.rows] = values.float().cpu().numpy()
        return result, slots

    def score(self, model_dir: str | os.PathLike) -> dict[str, SetScore]:
        """Accuracy, NLL and predictions of one student model dir on every set."""
        student = load_model_dir(model_dir, self.device)
        scores = {}
        for eval_set in self.sets:
            logits, slot_logits = self.outputs(student, eval_set)
            gold = np.array([student.labels.index(u.intent) for u in eval_set.manifest], np.int64)
            log_probs = functional.log_softmax(torch.from_numpy(logits), dim=-1)
            nll = (
                float(-log_probs[torch.arange(len(gold)), torch.from_numpy(gold)].mean())
                if len(gold)
                else 0.0
            )
            predicted = decoded_intents(student.labels, logits, slot_logits)  # what predict answers
            accuracy = float((predicted == gold).mean()) if len(gold) else 0.0
            commands = command_metrics(eval_set.manifest, student.labels, gold, logits, slot_logits)
            scores[eval_set.name] = SetScore(
                accuracy, nll, tuple(int(p) for p in predicted), commands["command_acceptance"]
            )
        return scores

    def cached_score(
        self, model_dir: str | os.PathLike, cache_file: str | os.PathLike
    ) -> dict[str, SetScore]:
        """:meth:`score`, read from ``cache_file`` when it was written for the same weights and sets."""
        model_dir, cache_file = Path(model_dir), Path(cache_file)
        fingerprint = {"model_sha256": file_sha256(model_dir / "model.safetensors"), **self.describe()}
        if cache_file.is_file():
            stored = json.loads(cache_file.read_text())
            if stored.get("fingerprint") == fingerprint:
                return {name: SetScore.from_dict(values) for name, values in stored["scores"].items()}
        scores = self.score(model_dir)
        write_json(cache_file, {"fingerprint": fingerprint,
                                "scores": {name: s.to_dict() for name, s in scores.items()}})  # fmt: skip
        return scores


__all__ = ["CLEAN", "EvalSet", "ScoringError", "SetScore", "StudentScorer", "evaluation_sets"]
