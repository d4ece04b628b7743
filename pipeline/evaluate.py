"""Evaluating a student (or the teacher) on one split: ``slukd evaluate`` -> ``DIR/eval/<split>.json``.

What one eval file holds (top-level keys):

- ``format``, ``version``: ``slukd-eval`` v1;
- ``model``: the model dir, its kind (``student`` or ``teacher``), parameters, weights size;
- ``split``, ``data``: the manifest, its sha256, the utterance count;
- ``settings``: the resolved :class:`EvaluateConfig`; ``fingerprint``: what a rerun must match
  to be skipped (settings, manifest and weights hashes, the teacher's);
- ``metrics``: on the clean split: accuracy, macro-F1, expected calibration error, per-slot
  accuracy, per-intent precision/recall/F1/support, the confusion matrix (with its label
  order), NLL, and agreement with the teacher when one is given;
- ``noise_sweep``: students only: accuracy and macro-F1 per condition (clean, then every noise
  type x SNR), noise mixed into the waveforms on the fly; ``null`` for the teacher;
- ``ctc``: WER/CER of the greedy CTC transcript on the clean split, when the student has a head;
- ``speed``: parameters, latency at batch 1 on one CPU thread (waveform in, logits out, or text
  in for the teacher), real-time factor, throughput at batch 64, on CPU and on a GPU if present;
- ``environment``: date, slukd and torch versions, CPU model, threads, GPU name.

Definitions (the metric functions below are plain functions on numpy arrays):

- macro-F1 averages the per-intent F1 over the intents that occur in the gold labels or the
  predictions (an intent absent from both says nothing about the model);
- ECE: predictions are put into 15 equal-width confidence bins over [0, 1] (bin ``b`` holds
  confidences in ``(b/15, (b+1)/15]``, the first also 0), and ECE is the sum over bins of
  ``|accuracy - mean confidence|`` weighted by the fraction of predictions in the bin;
- per-slot accuracy: the fraction of utterances whose predicted intent has the gold value of
  that slot (slots are read off the intent name, ``action_object_location`` for FSC-style maps);
- noise: for every condition and utterance a generator is seeded from (seed, condition,
  utterance id), so a rerun gives the same numbers whatever the batching; babble is the sum of
  three other utterances drawn from a fixed, seeded bank of the split's utterances; the noise is
  scaled so that the SNR over the utterance's own samples is exactly the one named.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import __version__
from pipeline.audio import SAMPLE_RATE
from pipeline.augment import AugmentConfig, add_noise, white_noise
from pipeline.config import from_dict, to_dict
from pipeline.data import WaveformDataset, batches_by_duration, collate_waveforms
from pipeline.features import FbankConfig, resolve_device
from pipeline.io import file_sha256, read_json, write_json
from pipeline.labels import LABELS_FILENAME, LabelSet, intent_slot_table
from pipeline.manifest import Manifest, read_manifest
from pipeline.text import normalize_transcript
from pipeline.train import ctc_greedy_decode

logger = logging.getLogger(__name__)

EVAL_FORMAT = "slukd-eval"
EVAL_VERSION = 1
EVAL_FOLDER = "eval"
NOISE_TYPES = ("white", "babble")
ECE_BINS = 15
BABBLE_SPEAKERS = 3


class EvaluationError(RuntimeError):
    """The evaluation cannot run (bad model dir, missing manifest, label maps that disagree)."""


@dataclass
class EvaluateConfig:
    """Settings of one evaluation; all of them enter the fingerprint of the eval file."""

    snrs: tuple[float, ...] = (20.0, 15.0, 10.0, 5.0, 0.0)  # dB, for every noise type
    noise_types: tuple[str, ...] = NOISE_TYPES  # white | babble
    noise: bool = True  # run the noise sweep (students only)
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

    def __post_init__(self) -> None:
        self.snrs = tuple(float(s) for s in self.snrs)
        self.noise_types = tuple(self.noise_types)
        unknown = [name for name in self.noise_types if name not in NOISE_TYPES]
        if unknown:
            raise ValueError(
                f"unknown noise type(s) {', '.join(unknown)}; choose from {', '.join(NOISE_TYPES)}"
            )
        if self.latency_utterances < 1 or self.throughput_batch < 1:
            raise ValueError("latency_utterances and throughput_batch must be at least 1")


# ---------------------------------------------------------------------------------------------
# Metric functions (numpy in, numbers out)


def accuracy(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Fraction of equal entries."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    return float((gold == predicted).mean()) if len(gold) else 0.0


def confusion_matrix(gold: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows gold, columns predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class of a confusion matrix (0 where undefined)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = predicted + support
    f1 = np.divide(2 * true_positive, total, out=np.zeros_like(true_positive), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def macro_f1(gold: np.ndarray, predicted: np.ndarray, num_classes: int | None = None) -> float:
    """Mean F1 over the classes present in ``gold`` or ``predicted``."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if not len(gold):
        return 0.0
    size = num_classes or int(max(gold.max(), predicted.max())) + 1
    confusion = confusion_matrix(gold, predicted, size)
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return float(per_class_scores(confusion)["f1"][present].mean())


def expected_calibration_error(probabilities: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width confidence bins (see the module docstring).

    Args:
        probabilities: ``[N, C]`` class probabilities (rows sum to 1).
        gold: ``[N]`` gold class ids.
        bins: number of bins over [0, 1].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(gold)).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of positions where two prediction arrays agree."""
    return accuracy(first, second)


def slot_accuracy(
    gold: np.ndarray, predicted: np.ndarray, slot_table: list[dict[str, str]]
) -> dict[str, float]:
    """Per slot, the fraction of utterances whose predicted intent carries the gold slot value."""
    if not len(gold):
        return {name: 0.0 for name in slot_table[0]}
    return {
        name: float(
            np.mean(
                [slot_table[g][name] == slot_table[p][name] for g, p in zip(gold, predicted, strict=True)]
            )
        )
        for name in slot_table[0]
    }


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer); utterances with an empty reference are left out."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def classification_report(gold: np.ndarray, logits: np.ndarray, labels: LabelSet) -> dict:
    """Every clean-split metric of one set of logits (accuracy, macro-F1, ECE, per intent, ...)."""
    gold = np.asarray(gold, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probabilities = np.exp(log_probabilities)
    predicted = logits.argmax(axis=1)
    confusion = confusion_matrix(gold, predicted, len(labels))
    scores = per_class_scores(confusion)
    table = intent_slot_table(labels)
    return {
        "utterances": int(len(gold)),
        "accuracy": accuracy(gold, predicted),
        "macro_f1": macro_f1(gold, predicted, len(labels)),
        "ece": expected_calibration_error(probabilities, gold, ECE_BINS),
        "ece_bins": ECE_BINS,
        "nll": float(-log_probabilities[np.arange(len(gold)), gold].mean()) if len(gold) else 0.0,
        "slot_accuracy": slot_accuracy(gold, predicted, table) if table else None,
        "per_intent": {
            intent: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, intent in enumerate(labels.intents)
        },
        "confusion": {"labels": list(labels.intents), "matrix": confusion.tolist()},
    }


# ---------------------------------------------------------------------------------------------
# Noise


class NoiseCondition(NamedTuple):
    noise: str  # clean | white | babble
    snr_db: float | None

    @property
    def name(self) -> str:
        return "clean" if self.noise == "clean" else f"{self.noise}_{self.snr_db:g}dB"


def noise_conditions(config: EvaluateConfig) -> list[NoiseCondition]:
    """Clean first, then every noise type at every SNR (highest SNR first)."""
    conditions = [NoiseCondition("clean", None)]
    if config.noise:
        for noise in config.noise_types:
            conditions += [NoiseCondition(noise, snr) for snr in sorted(config.snrs, reverse=True)]
    return conditions


def condition_generator(seed: int, condition: NoiseCondition, utterance_id: str) -> torch.Generator:
    """A CPU generator seeded from (seed, condition, utterance id): independent of batching."""
    digest = hashlib.sha256(f"{seed}|{condition.name}|{utterance_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class BabbleBank:
    """A fixed, seeded set of the split's utterances, each scaled to unit RMS, to build babble from."""

    def __init__(self, manifest: Manifest, size: int, seed: int, sample_rate: int = SAMPLE_RATE) -> None:
        order = np.random.default_rng([seed, 7]).permutation(len(manifest))[: max(size, BABBLE_SPEAKERS + 1)]
        dataset = WaveformDataset(manifest, sample_rate)
        self.ids: list[str] = []
        self.clips: list[Tensor] = []
        for index in sorted(order.tolist()):
            item = dataset[index]
            if item.error:
                raise EvaluationError(item.error)
            clip = item.waveform.float()
            self.ids.append(manifest[index].id)
            self.clips.append(clip / clip.pow(2).mean().sqrt().clamp_min(1e-12))

    def babble(self, utterance_id: str, num_samples: int, generator: torch.Generator) -> Tensor:
        """The sum of :data:`BABBLE_SPEAKERS` bank clips other than the utterance itself, tiled."""
        candidates = [i for i, other in enumerate(self.ids) if other != utterance_id]
        scores = torch.rand(len(candidates), generator=generator)
        chosen = [candidates[i] for i in scores.topk(min(BABBLE_SPEAKERS, len(candidates))).indices.tolist()]
        offsets = torch.rand(len(chosen), generator=generator)
        time_axis = torch.arange(num_samples)
        total = torch.zeros(num_samples)
        for index, offset in zip(chosen, offsets.tolist(), strict=True):
            clip = self.clips[index]
            total += clip[(time_axis + int(offset * len(clip))) % len(clip)]
        return total


def noisy_waveforms(waveforms: Tensor, lengths: Tensor, ids: Sequence[str], condition: NoiseCondition,
                    seed: int, babble_bank: BabbleBank | None = None) -> Tensor:  # fmt: skip
    """The batch with the condition's noise mixed in at its SNR over each utterance's own samples.

    Args:
        waveforms: ``[B, S]`` padded clean batch.
        lengths: ``[B]`` valid samples.
        ids: utterance ids (they seed the noise).
        condition: the noise type and SNR (``clean`` returns the batch unchanged).
        seed: the evaluation seed.
        babble_bank: needed for babble.
    """
    if condition.noise == "clean":
        return waveforms
    noise = torch.zeros_like(waveforms, dtype=torch.float32)
    for row, (utterance_id, length) in enumerate(zip(ids, lengths.tolist(), strict=True)):
        generator = condition_generator(seed, condition, utterance_id)
        if condition.noise == "white":
            noise[row, :length] = white_noise((length,), generator)
        elif condition.noise == "babble":
            if babble_bank is None:
                raise ValueError("babble noise needs a BabbleBank")
            noise[row, :length] = babble_bank.babble(utterance_id, length, generator)
        else:
            raise ValueError(f"unknown noise {condition.noise!r}; choose from {', '.join(NOISE_TYPES)}")
    return add_noise(waveforms, lengths, float(condition.snr_db), noise.to(waveforms.device))


# ---------------------------------------------------------------------------------------------
# Models


@dataclass
class LoadedModel:
    kind: str  # student | teacher
    labels: LabelSet
    config: dict
    student: Any = None  # SpeechStudent
    pipeline: Any = None  # train.FeaturePipeline
    teacher: Any = None  # teacher.Teacher
    ctc_characters: str | None = None
    extra: dict = field(default_factory=dict)


def model_kind(model_dir: str | os.PathLike) -> str:
    """``student`` or ``teacher``, from the model dir's config.json; anything else is an error."""
    from pipeline.teacher import CONFIG_SECTION
    from pipeline.train import MODEL_FORMAT

    folder = Path(model_dir)
    path = folder / "config.json"
    if not path.is_file():
        raise EvaluationError(f"{folder}: not a model dir (no config.json)")
    try:
        config = read_json(path)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error.msg})") from None
    if config.get("format") == MODEL_FORMAT:
        return "student"
    if isinstance(config.get(CONFIG_SECTION), dict):
        return "teacher"
    raise EvaluationError(
        f"{folder}: config.json is neither a slukd student ({MODEL_FORMAT}) nor a slukd teacher"
    )


def load_model(model_dir: str | os.PathLike, device: torch.device) -> LoadedModel:
    """Load a student (with its feature pipeline and CMVN) or a teacher model dir."""
    kind = model_kind(model_dir)
    if kind == "student":
        from pipeline.train import FeaturePipeline, TrainingError, load_student

        try:
            student, config = load_student(model_dir)
        except (TrainingError, RuntimeError) as error:
            raise EvaluationError(f"{model_dir}: {str(error).splitlines()[0]}") from None
        fbank = from_dict(FbankConfig, config["features"])
        mean = np.asarray(config["cmvn"]["mean"], np.float32)
        std = np.asarray(config["cmvn"]["std"], np.float32)
        return LoadedModel(
            "student", LabelSet.from_dict(config["labels"]), config, student=student.to(device),
            pipeline=FeaturePipeline(fbank, mean, std, AugmentConfig(), device),
            ctc_characters=config.get("ctc_characters") if student.ctc_head is not None else None,
        )  # fmt: skip
    from pipeline.teacher import TeacherError, load_teacher

    try:
        teacher = load_teacher(model_dir, device)
    except TeacherError as error:
        raise EvaluationError(str(error)) from None
    return LoadedModel("teacher", teacher.labels, read_json(Path(model_dir) / "config.json"), teacher=teacher)


@torch.no_grad()
def student_forward(model: LoadedModel, ids: list[str], waveforms: Tensor, lengths: Tensor):
    """Waveforms in, :class:`~pipeline.student.StudentOutput` out (fbank and the model's CMVN on the way)."""
    features, feature_lengths = model.pipeline.from_waveforms(waveforms, lengths)
    return model.student(features, feature_lengths)


# ---------------------------------------------------------------------------------------------
# Passes over the split


def _student_pass(model: LoadedModel, manifest: Manifest, config: EvaluateConfig, device: torch.device):
    """Logits per condition ``{name: [N, C]}`` in manifest order, and the clean CTC transcripts."""
    conditions = noise_conditions(config)
    bank = None
    if any(c.noise == "babble" for c in conditions):
        bank = BabbleBank(manifest, config.babble_bank_size, config.seed)
    logits = {c.name: np.zeros((len(manifest), len(model.labels)), np.float32) for c in conditions}
    transcripts: list[str] = [""] * len(manifest)
    batches = batches_by_duration([u.duration for u in manifest], config.batch_seconds, config.max_batch_size)
    loader = DataLoader(WaveformDataset(manifest), batch_sampler=batches, collate_fn=collate_waveforms)
    model.student.eval()
    for batch in tqdm(loader, desc=f"evaluate ({len(conditions)} condition(s))", unit="batch"):
        bad = [error for error in batch.errors if error]
        if bad:
            raise EvaluationError(f"{len(bad)} unreadable utterance(s) in {manifest.path}, first: {bad[0]}")
        ids = [manifest[i].id for i in batch.indices]
        for condition in conditions:
            waveforms = noisy_waveforms(batch.waveforms, batch.lengths, ids, condition, config.seed, bank)
            output = student_forward(model, ids, waveforms.to(device), batch.lengths.to(device))
            logits[condition.name][batch.indices] = output.logits.float().cpu().numpy()
            if condition.noise == "clean" and output.ctc_log_probs is not None and model.ctc_characters:
                decoded = ctc_greedy_decode(
                    output.ctc_log_probs.cpu().numpy(), output.lengths.tolist(), model.ctc_characters
                )
                for index, text in zip(batch.indices, decoded, strict=True):
                    transcripts[index] = text
    return logits, transcripts


def _teacher_logits(teacher, manifest: Manifest) -> np.ndarray:
    """The teacher's logits on the manifest's transcripts (one row per utterance)."""
    return teacher.logits([u.transcript for u in manifest])


# ---------------------------------------------------------------------------------------------
# Speed


def _median_seconds(run, repeats: int, synchronize) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _student_speed_on(model: LoadedModel, clips: list[Tensor], durations: list[float], config: EvaluateConfig,
                      device: torch.device) -> dict:  # fmt: skip
    from pipeline.train import FeaturePipeline

    student = model.student.to(device).eval()
    fbank = model.pipeline.extractor.config
    pipeline = FeaturePipeline(fbank, model.pipeline.mean.cpu().numpy(), model.pipeline.std.cpu().numpy(),
                               AugmentConfig(), device)  # fmt: skip
    view = LoadedModel("student", model.labels, model.config, student=student, pipeline=pipeline)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def one(clip: Tensor) -> None:
        student_forward(view, ["x"], clip[None].to(device), torch.tensor([clip.numel()], device=device))

    measured = clips[: config.latency_utterances]
    for clip in clips[: config.warmup]:
        one(clip)
    synchronize()
    latencies = [_median_seconds(lambda c=clip: one(c), 1, synchronize) for clip in measured]
    batch_clips = list(itertools.islice(itertools.cycle(clips), config.throughput_batch))
    lengths = torch.tensor([c.numel() for c in batch_clips])
    padded = torch.zeros(len(batch_clips), int(lengths.max()))
    for row, clip in enumerate(batch_clips):
        padded[row, : clip.numel()] = clip
    padded, lengths = padded.to(device), lengths.to(device)
    ids = ["x"] * len(batch_clips)

    def batch_run() -> None:
        student_forward(view, ids, padded, lengths)

    batch_run()
    synchronize()
    batch_seconds = _median_seconds(batch_run, config.throughput_repeats, synchronize)
    return {
        "latency_ms": 1000 * statistics.median(latencies),
        "latency_utterances": len(latencies),
        "real_time_factor": sum(latencies) / sum(durations[: len(latencies)]),
        "throughput_batch": len(batch_clips),
        "throughput_utterances_per_second": len(batch_clips) / batch_seconds,
    }


def _teacher_speed_on(teacher, texts: list[str], config: EvaluateConfig, device: torch.device) -> dict:
    model = teacher.model.to(device).eval()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def run(batch: list[str]) -> None:
        token_ids = teacher.tokenize(batch)  # text in, logits out: tokenising counts
        input_ids, attention_mask = teacher.batch(token_ids, device)
        model(input_ids, attention_mask)

    for text in texts[: config.warmup]:
        run([text])
    synchronize()
    latencies = [
        _median_seconds(lambda t=text: run([t]), 1, synchronize)
        for text in texts[: config.latency_utterances]
    ]
    batch = list(itertools.islice(itertools.cycle(texts), config.throughput_batch))
    run(batch)
    synchronize()
    batch_seconds = _median_seconds(lambda: run(batch), config.throughput_repeats, synchronize)
    return {
        "latency_ms": 1000 * statistics.median(latencies),
        "latency_utterances": len(latencies),
        "real_time_factor": None,  # text in: no audio to be real time against
        "throughput_batch": len(batch),
        "throughput_utterances_per_second": len(batch) / batch_seconds,
    }


class _threads:
    """Run a block with a given number of torch intra-op threads."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.count)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.saved)


def measure_speed(model: LoadedModel, manifest: Manifest, config: EvaluateConfig, model_dir: Path) -> dict:
    """Parameters, weights size, latency (batch 1, one CPU thread), RTF and throughput (CPU, GPU)."""
    needed = max(config.latency_utterances, config.warmup, min(config.throughput_batch, len(manifest)))
    chosen = list(range(min(len(manifest), needed)))
    parameters = (
        model.student.num_parameters() if model.kind == "student"
        else sum(p.numel() for p in model.teacher.model.parameters())
    )  # fmt: skip
    weights = Path(model_dir) / "model.safetensors"
    result: dict[str, Any] = {
        "parameters": int(parameters),
        "weights_bytes": weights.stat().st_size if weights.is_file() else None,
        "input": "waveform" if model.kind == "student" else "text",
    }
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if model.kind == "student":
        dataset = WaveformDataset(manifest)
        clips = []
        for index in chosen:
            item = dataset[index]
            if item.error:
                raise EvaluationError(item.error)
            clips.append(item.waveform)
        durations = [clip.numel() / SAMPLE_RATE for clip in clips]
    else:
        texts = [manifest[i].transcript for i in chosen]

    def on(device: torch.device) -> dict:
        if model.kind == "student":
            return _student_speed_on(model, clips, durations, config, device)
        return _teacher_speed_on(model.teacher, texts, config, device)

    threads = torch.get_num_threads()
    for device in devices:
        if device.type != "cpu":
            result[device.type] = on(device)
            continue
        with _threads(1):  # latency on one CPU thread
            single = on(device)
        if threads > 1:  # throughput with the process's own thread count
            single["throughput_utterances_per_second"] = on(device)["throughput_utterances_per_second"]
        result["cpu"] = {**single, "latency_threads": 1, "throughput_threads": threads}
    if model.kind == "student":  # leave the model where the accuracy passes need it
        model.student.to(model.pipeline.device)
    else:
        model.teacher.model.to(model.teacher.device)
    return result


# ---------------------------------------------------------------------------------------------
# The entry point


def environment() -> dict:
    """Date, versions and hardware, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "slukd_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "hardware": {
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }


def _manifest_for(data: str | os.PathLike, split: str) -> Path:
    from pipeline.teacher import TeacherError, find_manifests

    try:
        manifests = find_manifests(data)
    except TeacherError as error:
        raise EvaluationError(str(error)) from None
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


def evaluate(model_dir: str | os.PathLike, data: str | os.PathLike, split: str, config: EvaluateConfig | None = None,
             teacher_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             force: bool = False) -> dict:  # fmt: skip
    """Evaluate a student or teacher model dir on one split and write ``eval/<split>.json``.

    Args:
        model_dir: a student or teacher model dir.
        data: a folder with ``manifests/<split>.jsonl`` and ``labels.json``, or that manifests folder.
        split: which split.
        config: settings (noise sweep, speed, device, seed).
        teacher_dir: a fine-tuned teacher whose predictions the model is compared with.
        out_dir: folder for the eval file (default ``model_dir/eval``).
        force: recompute even when an eval file with the same fingerprint exists.

    Returns:
        The eval dict (as written).
    """
    config = config or EvaluateConfig()
    model_dir = Path(model_dir)
    kind = model_kind(model_dir)
    manifest_path = _manifest_for(data, split)
    target = eval_path(model_dir, split, out_dir)
    settings = {**to_dict(config), "snrs": list(config.snrs), "noise_types": list(config.noise_types)}
    if kind == "teacher":
        settings["noise"] = False  # the teacher reads gold transcripts: no noise sweep
    weights = model_dir / "model.safetensors"
    fingerprint = {
        "settings": settings,
        "manifest_sha256": file_sha256(manifest_path),
        "model_sha256": file_sha256(weights) if weights.is_file() else None,
        "config_sha256": file_sha256(model_dir / "config.json"),
        "teacher_sha256": file_sha256(Path(teacher_dir) / "model.safetensors") if teacher_dir else None,
    }
    if target.is_file() and not force:
        try:
            if read_json(target).get("fingerprint") == json.loads(json.dumps(fingerprint)):
                logger.info(
                    "%s: already evaluated with these settings, skipping (--force recomputes)", target
                )
                return read_json(target)
        except (json.JSONDecodeError, OSError, AttributeError):
            pass
    logger.info("evaluating %s (%s) on %s: %s", model_dir, kind, manifest_path, settings)
    start = time.monotonic()
    device = resolve_device(config.device)
    model = load_model(model_dir, device)
    _check_labels(manifest_path, model.labels, model_dir)
    manifest = read_manifest(manifest_path, model.labels)
    if not len(manifest):
        raise EvaluationError(f"{manifest_path}: no utterances")
    gold = np.array([model.labels.index(u.intent) for u in manifest], dtype=np.int64)

    noise_sweep = None
    ctc = None
    if kind == "student":
        logits_by_condition, hypotheses = _student_pass(model, manifest, config, device)
        logits = logits_by_condition["clean"]
        noise_sweep = []
        for condition in noise_conditions(config):
            predicted = logits_by_condition[condition.name].argmax(axis=1)
            noise_sweep.append({
                "condition": condition.name, "noise": condition.noise, "snr_db": condition.snr_db,
                "accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted, len(model.labels)),
            })  # fmt: skip
        if model.ctc_characters:
            references = [normalize_transcript(u.transcript) for u in manifest]
            ctc = {
                **error_rates(references, hypotheses),
                "decoder": "greedy",
                "examples": [{"id": u.id, "reference": r, "hypothesis": h}
                             for u, r, h in list(zip(manifest, references, hypotheses, strict=True))[:5]],
            }  # fmt: skip
    else:
        logits = _teacher_logits(model.teacher, manifest)

    metrics = classification_report(gold, logits, model.labels)
    metrics["teacher"] = None
    metrics["teacher_agreement"] = None
    metrics["teacher_accuracy"] = None
    if teacher_dir is not None:
        from pipeline.teacher import TeacherError, load_teacher

        try:
            teacher = model.teacher if kind == "teacher" and Path(teacher_dir).resolve() == model_dir.resolve() \
                else load_teacher(teacher_dir, device)  # fmt: skip
        except TeacherError as error:
            raise EvaluationError(str(error)) from None
        if teacher.labels.intents != model.labels.intents:
            raise EvaluationError(f"label maps disagree: the teacher {teacher_dir} and the model {model_dir}")
        teacher_predicted = _teacher_logits(teacher, manifest).argmax(axis=1)
        metrics["teacher"] = str(teacher_dir)
        metrics["teacher_agreement"] = agreement(logits.argmax(axis=1), teacher_predicted)
        metrics["teacher_accuracy"] = accuracy(gold, teacher_predicted)

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
        },
        "split": split,
        "data": {
            "manifest": str(manifest_path),
            "manifest_sha256": fingerprint["manifest_sha256"],
            "utterances": len(manifest),
        },
        "settings": settings,
        "fingerprint": fingerprint,
        "metrics": metrics,
        "noise_sweep": noise_sweep,
        "ctc": ctc,
        "speed": speed,
        "environment": {**environment(), "device": str(device)},
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(target, result)
    logger.info(
        "%s: accuracy %.4f, macro-F1 %.4f, ECE %.4f%s -> %s",
        split, metrics["accuracy"], metrics["macro_f1"], metrics["ece"],
        "" if ctc is None else f", WER {ctc['wer']:.3f}", target,
    )  # fmt: skip
    return result
