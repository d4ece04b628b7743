"""Evaluating a model dir on one split: ``slukd evaluate`` -> ``DIR/eval/<split>.json``.

What one eval file holds (top-level keys):

- ``format``, ``version``: ``slukd-eval`` v1;
- ``model``: the model dir, its kind (``student``, ``teacher`` or ``cascade``), its ASR (cascades);
- ``split``, ``data``: the manifest, its sha256, the utterance count, and ``subset`` when a
  seeded subset was evaluated (``max_utterances``, ``noisy_utterances``; see :func:`choose_subset`);
- ``settings``: the resolved :class:`EvaluateConfig`; ``fingerprint``: what a rerun must match
  to be skipped (settings, manifest and weights hashes, the teacher's, the kind's own: a
  cascade's ASR and teacher weights);
- ``metrics``: on the clean split: accuracy, macro-F1, expected calibration error, per-slot
  accuracy, per-intent precision/recall/F1/support, the confusion matrix (with its label
  order), NLL, and agreement with the teacher when one is given (definitions:
  :mod:`pipeline.scoring.metrics`); where the labels have slots, ``command_acceptance`` (intent and
  every slot exact, the headline metric) and ``slots`` (per-slot accuracy and F1)
  (:mod:`pipeline.evaluation.command_scores`), also per noise-sweep condition;
- ``noise_sweep``: audio-in models only: per condition (clean, then every noise type x SNR, then
  a reverberant room and a telephone channel, ``snr_db`` null for those; see
  :mod:`pipeline.augment.conditions`) the utterances, accuracy, macro-F1, per-slot accuracy, and for a
  cascade the WER and CER of its ASR; ``null`` for the teacher;
- ``ctc``: WER/CER of the greedy CTC transcript on the clean split, when the student has a head;
- ``asr``: a cascade's WER/CER per condition and every hypothesis (:mod:`pipeline.evaluation.records`);
- ``predictions``: every model's predicted intent per utterance and condition, so that models
  evaluated on different subsets are compared on the same utterances;
- ``speed``: parameters, weights size (by part for a cascade), latency at batch 1 on one CPU
  thread (waveform in, logits out, or text in for the teacher), real-time factor, throughput at
  batch 64, on CPU and on a GPU if present (:mod:`pipeline.evaluation.speed`; a cascade: CPU, batch 1);
- ``environment``: date, slukd and torch versions, CPU model, threads, GPU name.

Model kinds: :data:`MODEL_KINDS` maps a kind name to how its ``config.json`` is recognised and
how the dir is loaded into a :class:`LoadedModel` (audio in or text in); a new kind registers
itself there with :func:`register_model_kind`.

Noise: for every condition and utterance a generator is seeded from (seed, condition, utterance
id), so a rerun gives the same numbers whatever the batching; babble is the sum of three other
utterances drawn from a fixed, seeded bank of the split's utterances; the noise is scaled so
that the SNR over the utterance's own samples is exactly the one named.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.augment.conditions import (
    SWEEP_NOISE_TYPES,
    BabbleBank,
    NoiseCondition,  # noqa: F401 (part of this module's API before the split)
    noise_conditions,
    noisy_waveforms,
)
from pipeline.augment.noise import SNR_REFERENCES
from pipeline.core.config import to_dict
from pipeline.core.devices import resolve_device
from pipeline.core.environment import environment
from pipeline.core.errors import SlukdError
from pipeline.core.io import file_sha256, read_json, write_json
from pipeline.data.batching import WaveformDataset, batches_by_duration, collate_waveforms, trim_batch
from pipeline.data.labels import LABELS_FILENAME, LabelSet
from pipeline.data.manifest import Manifest, find_manifests, read_manifest, require_transcripts
from pipeline.data.text import normalize_transcript
from pipeline.evaluation.command_scores import command_correct, command_metrics, decoded_intents
from pipeline.evaluation.open_set import evaluate_open_set, is_out_of_domain
from pipeline.evaluation.records import (
    asr_record,
    condition_scores,
    predictions_record,
    reusable_hypotheses,
    store_slot_logits,
    subset_note,
)
from pipeline.evaluation.shared_frozen import SHARED_FROZEN
from pipeline.evaluation.speed import measure_speed
from pipeline.scoring.metrics import accuracy, agreement, classification_report, error_rates
from pipeline.serving.model_kinds import MODEL_KINDS, TEXT, WAVEFORM, LoadedModel, load_model, model_kind
from pipeline.students.ctc import ctc_greedy_decode

logger = logging.getLogger(__name__)

EVAL_FORMAT = "slukd-eval"
EVAL_VERSION = 1
EVAL_FOLDER = "eval"
NOISE_TYPES, DEFAULT_NOISE_TYPES = SWEEP_NOISE_TYPES, ("white", "babble")


class EvaluationError(SlukdError, RuntimeError):
    """The evaluation cannot run (bad model dir, missing manifest, label maps that disagree)."""


@dataclass
class EvaluateConfig:
    """Settings of one evaluation; all of them enter the fingerprint of the eval file."""

    snrs: tuple[float, ...] = (20.0, 15.0, 10.0, 5.0, 0.0)  # dB, for every noise type
    noise_types: tuple[str, ...] = DEFAULT_NOISE_TYPES  # of NOISE_TYPES: white | pink | household | babble
    snr_reference: str = "mean"  # mean | peak: the SNR on the utterance's mean power or its loudest frame
    noise: bool = True  # run the noise sweep (students only)
    reverb: bool = True  # a reverberant-room condition in the sweep (pipeline.augment.conditions)
    reverb_rt60_s: tuple[float, float] = (0.3, 0.6)  # its RT60 range, drawn per utterance
    telephone: bool = True  # a telephone-channel condition (300-3400 Hz, 8 kHz, mu-law)
    speed: bool = True  # measure latency and throughput
    device: str = "auto"  # where the accuracy passes run; latency is always also measured on CPU
    seed: int = 0  # seeds the noise
    batch_seconds: float = 120.0  # padded audio seconds per batch
    max_batch_size: int = 64
    babble_bank_size: int = 32  # utterances of the split that babble is drawn from
    latency_utterances: int = 30  # utterances timed at batch 1 (median reported)
    warmup: int = 3  # untimed passes before timing
    throughput_batch: int = 64
    throughput_repeats: int = 3
    max_utterances: int = 0  # evaluate a seeded subset of this many utterances (0: the whole split)
    noisy_utterances: int = 0  # run the noisy conditions on a seeded subset of those (0: all of them)

    def __post_init__(self) -> None:
        self.snrs = tuple(float(s) for s in self.snrs)
        self.noise_types = tuple(self.noise_types)
        self.reverb_rt60_s = tuple(float(s) for s in self.reverb_rt60_s)
        if len(self.reverb_rt60_s) != 2 or not 0 < self.reverb_rt60_s[0] <= self.reverb_rt60_s[1]:
            raise ValueError(f"reverb_rt60_s must be [low, high] seconds, 0 < low <= high, "
                             f"got {list(self.reverb_rt60_s)}")  # fmt: skip
        unknown = [name for name in self.noise_types if name not in NOISE_TYPES]
        if unknown:
            raise ValueError(
                f"unknown noise type(s) {', '.join(unknown)}; choose from {', '.join(NOISE_TYPES)}"
            )
        if self.snr_reference not in SNR_REFERENCES:
            raise ValueError(
                f"snr_reference must be one of {', '.join(SNR_REFERENCES)}, got {self.snr_reference!r}"
            )
        if self.latency_utterances < 1 or self.throughput_batch < 1:
            raise ValueError("latency_utterances and throughput_batch must be at least 1")
        if self.max_utterances < 0 or self.noisy_utterances < 0:
            raise ValueError("max_utterances and noisy_utterances must be >= 0 (0: all)")


# ---------------------------------------------------------------------------------------------
# Passes over the split


def choose_subset(size: int, config: EvaluateConfig) -> tuple[list[int], list[int]]:
    """The utterances evaluated (clean) and those of them the noisy conditions run on: indices into
    the split, in manifest order. Seeded; the noisy subset is a prefix of the same permutation, so
    it lies inside the clean one and stays the same for every model."""
    order = np.random.default_rng([config.seed, 11]).permutation(size)
    evaluated = config.max_utterances or size
    noisy = min(config.noisy_utterances or evaluated, evaluated)
    return sorted(order[:evaluated].tolist()), sorted(order[:noisy].tolist())


@dataclass
class WaveformPass:
    """What one pass over the split under every condition gives (manifest order)."""

    logits: dict[str, np.ndarray]  # condition -> [N, C]; NaN rows where the condition did not run
    ctc_transcripts: list[str]  # greedy CTC text on the clean audio ("" without a CTC head)
    hypotheses: dict[str, list[str | None]]  # condition -> a cascade's ASR text (None: not run)
    slot_logits: dict[
        str, dict[str, np.ndarray]
    ]  # condition -> slot -> [N, classes] (slot heads; NaN: not run)


def _waveform_pass(model: LoadedModel, manifest: Manifest, config: EvaluateConfig, device: torch.device,
                   bank: BabbleBank | None, noisy_rows: set[int],
                   known: dict[tuple[str, str], str] | None = None) -> WaveformPass:  # fmt: skip
    """Every condition over the split; the noisy ones only on ``noisy_rows``. ``known`` holds ASR
    hypotheses by (condition, utterance id) that a cascade classifies instead of transcribing again."""
    conditions = noise_conditions(config)
    known = known or {}
    logits = {c.name: np.full((len(manifest), len(model.labels)), np.nan, np.float32) for c in conditions}
    hypotheses: dict[str, list[str | None]] = {c.name: [None] * len(manifest) for c in conditions}
    transcripts: list[str] = [""] * len(manifest)
    slot_logits: dict[str, dict[str, np.ndarray]] = {c.name: {} for c in conditions}
    batches = batches_by_duration([u.duration for u in manifest], config.batch_seconds, config.max_batch_size)
    # The files as they are; a model trained on trimmed audio trims each input after the noise is
    # mixed in, as prediction trims a noisy recording (trimming the clean file first would hide
    # what noise does to the speech detector)
    trim = bool(model.config.get("trim_silence"))
    waveforms = WaveformDataset(manifest, trim_silence=False)
    loader = DataLoader(waveforms, batch_sampler=batches, collate_fn=collate_waveforms)
    model.module.eval()
    forward = SHARED_FROZEN.forward_for(model) or model.waveform_forward  # a frozen bottom run once per batch
    for batch in tqdm(loader, desc=f"evaluate ({len(conditions)} condition(s))", unit="batch"):
        bad = [error for error in batch.errors if error]
        if bad:
            raise EvaluationError(f"{len(bad)} unreadable utterance(s) in {manifest.path}, first: {bad[0]}")
        for condition in conditions:
            rows = [r for r, i in enumerate(batch.indices) if condition.noise == "clean" or i in noisy_rows]
            ids = [manifest[batch.indices[r]].id for r in rows]
            cached = [r for r, i in zip(rows, ids, strict=True) if (condition.name, i) in known]
            if cached and model.text_outputs is not None:
                texts = [known[(condition.name, manifest[batch.indices[r]].id)] for r in cached]
                indices = [batch.indices[r] for r in cached]
                logits[condition.name][indices], cached_slots = model.text_outputs(texts)
                store_slot_logits(slot_logits[condition.name], cached_slots, indices, len(manifest))
                for index, text in zip(indices, texts, strict=True):
                    hypotheses[condition.name][index] = text
                rows = [r for r in rows if r not in set(cached)]
            if not rows:
                continue
            selected = torch.tensor(rows)
            waveforms, lengths = batch.waveforms[selected], batch.lengths[selected]
            waveforms = noisy_waveforms(waveforms, lengths, [manifest[batch.indices[r]].id for r in rows],
                                        condition, config.seed, bank)  # fmt: skip
            if trim:
                waveforms, lengths = trim_batch(waveforms, lengths)
            output = forward(waveforms.to(device), lengths.to(device))
            indices = [batch.indices[r] for r in rows]
            logits[condition.name][indices] = output.logits.float().cpu().numpy()
            store_slot_logits(slot_logits[condition.name],
                               {name: values.float().cpu().numpy() for name, values in output.slot_logits.items()},
                               indices, len(manifest))  # fmt: skip
            if output.hypotheses is not None:
                for index, text in zip(indices, output.hypotheses, strict=True):
                    hypotheses[condition.name][index] = text
            if condition.noise == "clean" and output.ctc_log_probs is not None and model.ctc_characters:
                decoded = ctc_greedy_decode(
                    output.ctc_log_probs.cpu().numpy(), output.lengths.tolist(), model.ctc_characters
                )
                for index, text in zip(indices, decoded, strict=True):
                    transcripts[index] = text
    return WaveformPass(logits, transcripts, hypotheses, slot_logits)


# ---------------------------------------------------------------------------------------------
# The entry point


def _manifest_for(data: str | os.PathLike, split: str) -> Path:
    manifests = find_manifests(data)
    if split not in manifests:
        raise EvaluationError(f"{data}: no manifest for split {split!r}; available: {', '.join(manifests)}")
    return manifests[split]


def _check_labels(manifest_path: Path, labels: LabelSet, model_dir: Path, what: str = "model") -> None:
    beside = manifest_path.parent / LABELS_FILENAME
    if beside.is_file():
        data_labels = LabelSet.load(beside)
        if data_labels.intents != labels.intents:
            differ = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(data_labels.intents, labels.intents, strict=False))
                    if a != b
                ),
                min(len(data_labels.intents), len(labels.intents)),
            )
            raise EvaluationError(
                f"label maps disagree: {beside} has {len(data_labels)} intents, the {what} {model_dir} has "
                f"{len(labels)}; first difference at id {differ}"
            )


def eval_path(model_dir: str | os.PathLike, split: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Where the eval file of a split goes: ``OUT/<split>.json``, by default ``MODEL/eval/<split>.json``."""
    return Path(out_dir or Path(model_dir) / EVAL_FOLDER) / f"{split}.json"


def _fingerprint(
    model_dir: Path, kind: str, manifest_path: Path, settings: dict, teacher_dir: str | os.PathLike | None
) -> dict:
    weights = model_dir / "model.safetensors"
    kind_fingerprint = MODEL_KINDS[kind].fingerprint
    return {
        "settings": settings,
        "manifest_sha256": file_sha256(manifest_path),
        "model_sha256": file_sha256(weights) if weights.is_file() else None,
        "config_sha256": file_sha256(model_dir / "config.json"),
        "teacher_sha256": file_sha256(Path(teacher_dir) / "model.safetensors") if teacher_dir else None,
        "kind": kind_fingerprint(model_dir) if kind_fingerprint is not None else None,
    }


def _finished(target: Path, fingerprint: dict) -> dict | None:
    """The eval file at ``target`` when it was written with this fingerprint."""
    if not target.is_file():
        return None
    try:
        result = read_json(target)
        if result.get("fingerprint") == json.loads(json.dumps(fingerprint)):
            return result
    except (json.JSONDecodeError, OSError, AttributeError):
        pass
    return None


@dataclass
class AudioResults:
    """The audio-in parts of an eval file."""

    clean_logits: np.ndarray  # [N, C]
    clean_slot_logits: dict[str, np.ndarray]  # slot -> [N, classes]; empty without slot heads
    noise_sweep: list[dict]
    ctc: dict | None
    predictions: dict
    asr: dict | None


def _audio_metrics(model: LoadedModel, manifest: Manifest, split_manifest: Manifest, gold: np.ndarray,
                   config: EvaluateConfig, device: torch.device, noisy_rows: set[int],
                   known: dict[tuple[str, str], str]) -> AudioResults:  # fmt: skip
    """Every condition's scores, the CTC scores, the predictions and a cascade's ASR section."""
    conditions = noise_conditions(config)
    bank = None
    if any(
        c.noise == "babble" for c in conditions
    ):  # drawn from the whole split: the same babble for every model
        bank = BabbleBank(split_manifest, config.babble_bank_size, config.seed)
    result = _waveform_pass(model, manifest, config, device, bank, noisy_rows, known)
    # the intents predict answers (slot heads decoded jointly)
    decoded = {
        name: decoded_intents(model.labels, v, result.slot_logits[name]) for name, v in result.logits.items()
    }
    asr, rates = None, {}
    if model.asr is not None:
        asr, rates = asr_record(manifest, result.hypotheses, decoded, model.labels)
    noise_sweep = []
    for condition in conditions:
        ran, scores = condition_scores(
            gold, result.logits[condition.name], model.labels, decoded[condition.name]
        )
        commands = command_metrics(manifest, model.labels, gold, result.logits[condition.name],
                                   result.slot_logits[condition.name], ran)  # fmt: skip
        scores["command_acceptance"] = commands["command_acceptance"]
        noise_sweep.append({"condition": condition.name, "noise": condition.noise, "snr_db": condition.snr_db,
                            **scores, **rates.get(condition.name, {})})  # fmt: skip
    ctc = None
    if model.ctc_characters:
        references = [normalize_transcript(u.transcript) for u in manifest]
        ctc = {
            **error_rates(references, result.ctc_transcripts),
            "decoder": "greedy",
            "examples": [{"id": u.id, "reference": r, "hypothesis": h}
                         for u, r, h in list(zip(manifest, references, result.ctc_transcripts, strict=True))[:5]],
        }  # fmt: skip
    if asr is not None:
        asr = {"name": model.asr, **asr}
    exact = {
        name: command_correct(manifest, model.labels, gold, values, result.slot_logits[name])
        for name, values in result.logits.items()
    }
    predictions = predictions_record(manifest, gold, result.logits, decoded, exact)
    return AudioResults(
        result.logits["clean"], result.slot_logits["clean"], noise_sweep, ctc, predictions, asr
    )


def _teacher_comparison(model: LoadedModel, model_dir: Path, teacher_dir: str | os.PathLike, manifest: Manifest,
                        gold: np.ndarray, answered: np.ndarray, device: torch.device) -> dict:  # fmt: skip
    """Agreement of the model's answers (``answered``: intent indices) with a fine-tuned teacher's,
    and the teacher's own accuracy; both answer with their slot heads decoded jointly."""
    from pipeline.teacher.model import load_teacher

    same = model.teacher is not None and Path(teacher_dir).resolve() == model_dir.resolve()
    teacher = model.teacher if same else load_teacher(teacher_dir, device)
    if teacher.labels.intents != model.labels.intents:
        raise EvaluationError(f"label maps disagree: the teacher {teacher_dir} and the model {model_dir}")
    teacher_predicted = decoded_intents(teacher.labels, *teacher.outputs([u.transcript for u in manifest]))
    return {
        "teacher": str(teacher_dir),
        "teacher_agreement": agreement(answered, teacher_predicted),
        "teacher_accuracy": accuracy(gold, teacher_predicted),
    }


def evaluate(model_dir: str | os.PathLike, data: str | os.PathLike, split: str, config: EvaluateConfig | None = None,
             teacher_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             force: bool = False, reuse_hypotheses: str | os.PathLike | None = None) -> dict:  # fmt: skip
    """Evaluate a model dir (any kind in :data:`MODEL_KINDS`) on one split and write ``eval/<split>.json``.

    Args:
        model_dir: a student, teacher or cascade dir.
        data: a folder with ``manifests/<split>.jsonl`` and ``labels.json``, or that manifests folder.
        split: which split.
        config: settings (noise sweep, subset, speed, device, seed).
        teacher_dir: a fine-tuned teacher whose predictions the model is compared with.
        out_dir: folder for the eval file (default ``model_dir/eval``).
        force: recompute even when an eval file with the same fingerprint exists.
        reuse_hypotheses: a cascade's eval file whose ASR hypotheses this cascade classifies instead
            of transcribing again, when the ASR, manifest and noise are the same
            (:func:`pipeline.evaluation.records.reusable_hypotheses`); it does not change the results.

    Returns:
        The eval dict (as written).
    """
    config = config or EvaluateConfig()
    model_dir = Path(model_dir)
    kind = model_kind(model_dir)
    manifest_path = _manifest_for(data, split)
    if is_out_of_domain(read_manifest(manifest_path)):  # every intent `unknown`: the open-set evaluation
        return evaluate_open_set(model_dir, data, split, device=config.device, out_dir=out_dir,
                                 max_utterances=config.max_utterances)  # fmt: skip
    target = eval_path(model_dir, split, out_dir)
    settings = {**to_dict(config), "snrs": list(config.snrs), "noise_types": list(config.noise_types)}
    if MODEL_KINDS[kind].input == TEXT:
        settings["noise"] = False  # a text-in model (the teacher) reads gold transcripts: no noise sweep
    fingerprint = _fingerprint(model_dir, kind, manifest_path, settings, teacher_dir)
    finished = None if force else _finished(target, fingerprint)
    if finished is not None:
        logger.info("%s: already evaluated with these settings, skipping (--force recomputes)", target)
        return finished
    logger.info("evaluating %s (%s) on %s: %s", model_dir, kind, manifest_path, settings)
    start = time.monotonic()
    device = resolve_device(config.device)
    model = load_model(model_dir, device)
    _check_labels(manifest_path, model.labels, model_dir)
    split_manifest = read_manifest(manifest_path, model.labels)
    evaluated, noisy = choose_subset(len(split_manifest), config)
    manifest = read_manifest(manifest_path, model.labels)
    manifest.utterances = [split_manifest[i] for i in evaluated]
    subset = None
    if len(evaluated) < len(split_manifest) or len(noisy) < len(evaluated):
        subset = {"seed": config.seed, "split_utterances": len(split_manifest), "utterances": len(evaluated),
                  "noisy_utterances": len(noisy) if config.noise and model.input == WAVEFORM else 0}  # fmt: skip
        logger.info("evaluating %s", subset_note(subset))
    gold = np.array([model.labels.index(u.intent) for u in manifest], dtype=np.int64)

    noise_sweep = ctc = asr = None
    slot_logits: dict[str, np.ndarray] = {}
    if model.input == WAVEFORM:
        position = {index: row for row, index in enumerate(evaluated)}
        known = reusable_hypotheses(reuse_hypotheses, fingerprint, settings) if reuse_hypotheses else {}
        audio = _audio_metrics(model, manifest, split_manifest, gold, config, device,
                               {position[i] for i in noisy}, known)  # fmt: skip
        logits, slot_logits, noise_sweep, ctc, predictions, asr = (
            audio.clean_logits,
            audio.clean_slot_logits,
            audio.noise_sweep,
            audio.ctc,
            audio.predictions,
            audio.asr,
        )
        if asr is not None and known:
            asr["reused"] = {"from": str(reuse_hypotheses), "hypotheses": len(known)}
    else:
        require_transcripts(manifest, f"the text model {model_dir}")
        if model.text_outputs is not None:
            logits, slot_logits = model.text_outputs([u.transcript for u in manifest])
        else:
            logits = model.text_logits([u.transcript for u in manifest])
    answered = decoded_intents(model.labels, logits, slot_logits)
    if model.input != WAVEFORM:
        exact = {"clean": command_correct(manifest, model.labels, gold, logits, slot_logits)}
        predictions = predictions_record(manifest, gold, {"clean": logits}, {"clean": answered}, exact)
    metrics = classification_report(gold, logits, model.labels, answered)
    metrics.update(command_metrics(manifest, model.labels, gold, logits, slot_logits))
    metrics.update({"teacher": None, "teacher_agreement": None, "teacher_accuracy": None})
    if teacher_dir is not None and all(u.has_transcript for u in manifest):  # audio-only lines: no teacher
        metrics.update(_teacher_comparison(model, model_dir, teacher_dir, manifest, gold, answered, device))
    speed = measure_speed(model, manifest, config, model_dir) if config.speed else None
    training_metrics = model_dir / "metrics.json"
    result = {
        "format": EVAL_FORMAT,
        "version": EVAL_VERSION,
        "model": {
            "dir": str(model_dir),
            "kind": kind,
            "losses": read_json(training_metrics).get("losses")
            if kind == "student" and training_metrics.is_file()
            else None,
            "ctc_head": bool(model.ctc_characters),
            "asr": model.asr,
        },
        "split": split,
        "data": {
            "manifest": str(manifest_path),
            "manifest_sha256": fingerprint["manifest_sha256"],
            "utterances": len(manifest),
            "split_utterances": len(split_manifest),
            "subset": subset,
        },
        "settings": settings,
        "fingerprint": fingerprint,
        "metrics": metrics,
        "noise_sweep": noise_sweep,
        "ctc": ctc,
        "asr": asr,
        "predictions": predictions,
        "speed": speed,
        "environment": {**environment(), "device": str(device)},
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(target, result)
    wer = ctc["wer"] if ctc is not None else (asr["conditions"][0]["wer"] if asr else None)
    logger.info(
        "%s: accuracy %.4f, macro-F1 %.4f, ECE %.4f%s -> %s",
        split, metrics["accuracy"], metrics["macro_f1"], metrics["ece"],
        "" if wer is None else f", WER {wer:.3f}", target,
    )  # fmt: skip
    return result
