"""Training the student: CE-only or distilled from the teacher's targets.

Named parts, after icefall: :class:`TrainConfig` (params with documented defaults),
:func:`compute_loss`, :func:`train_one_epoch`, :func:`run` (one rank), :func:`train_student`
(the library entry point ``slukd train`` wraps).

- AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on GPU;
- batches bucketed by length and capped by total (padded) frames, reshuffled per epoch from
  ``(seed, epoch)`` so that a resumed run sees exactly the batches an uninterrupted one would;
- features from the store, or computed on the fly from waveforms when waveform augmentation
  (speed, noise) is on; SpecAugment on either;
- DDP under torchrun (NCCL on GPU, gloo on CPU);
- a checkpoint each epoch holding model, optimiser, scheduler, RNG and early-stopping state;
  selection and early stopping on the valid split only; optional averaging of the best epochs;
- ``train_log.csv``, a progress bar, and the final self-contained model dir.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline import distributed
from pipeline.augment import AugmentConfig, Augmenter
from pipeline.config import from_dict, to_dict
from pipeline.data import WaveformDataset
from pipeline.distill import DistillationLoss, DistillConfig, TeacherBatch, uniform_layer_map
from pipeline.feature_store import FeatureStore
from pipeline.features import FbankConfig, FbankExtractor, resolve_device
from pipeline.io import atomic_directory, is_done, mark_done, write_json
from pipeline.labels import LabelSet
from pipeline.manifest import Manifest, read_manifest
from pipeline.student import SpeechStudent, StudentConfig, subsampled_lengths
from pipeline.text import normalize_transcript

logger = logging.getLogger(__name__)

MODEL_FORMAT = "slukd-student"
MODEL_VERSION = 1
CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz0123456789"  # CTC vocabulary after the blank (id 0)


class TrainingError(RuntimeError):
    """Training cannot go on (bad inputs, a non-finite loss)."""


@dataclass
class TrainConfig:
    """Optimisation and data settings (the architecture is :class:`StudentConfig`)."""

    epochs: int = 30
    max_frames: int = 20000  # padded input frames per batch (per rank)
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    patience: int = 8  # stop after this many epochs without a better valid accuracy; 0: never
    average_best: int = 0  # average the weights of this many best epochs at the end; 0: keep the best
    train_fraction: float = 1.0  # train on a seeded subset of the training utterances
    on_the_fly: bool = False  # compute features from waveforms (needed for speed/noise augmentation)
    num_workers: int = 0  # DataLoader processes


@dataclass
class ExperimentConfig:
    """Everything one student run depends on, written beside its outputs."""

    train: TrainConfig = field(default_factory=TrainConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return {
            "train": to_dict(self.train),
            "student": to_dict(self.student),
            "distill": to_dict(self.distill),
            "augment": self.augment.to_dict(),
        }


def load_experiment_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Sections ``train``, ``student``, ``distill``, ``augment`` of a YAML file; overrides as
    ``section.key=value`` (``distill.logits=1.0``)."""
    from pipeline.config import ConfigError, load_config, parse_overrides, read_section

    sections = {
        "train": TrainConfig,
        "student": StudentConfig,
        "distill": DistillConfig,
        "augment": AugmentConfig,
    }
    grouped: dict[str, list[str]] = {name: [] for name in sections}
    for override in overrides or []:
        key = override.split("=", 1)[0]
        section, dot, _ = key.partition(".")
        if not dot or section not in sections:
            raise ConfigError(
                f"override {override!r} must be SECTION.KEY=VALUE with SECTION in {', '.join(sections)}"
            )
        grouped[section].append(override.split(".", 1)[1])
    built = {}
    for name, cls in sections.items():
        if cls is AugmentConfig:  # validates itself, and knows its own tuple fields
            values = {**read_section(path, name), **parse_overrides(grouped[name])}
            try:
                built[name] = AugmentConfig.from_dict(values)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"augment: {error}") from None
        else:
            built[name] = load_config(cls, path, grouped[name], section=name)
    return ExperimentConfig(**built)


# ---------------------------------------------------------------------------------------------
# Data


class Example(NamedTuple):
    id: str
    target: int
    transcript: str  # normalised
    features: Tensor | None  # [frames, bins] (store path)
    waveform: Tensor | None  # [samples] (on-the-fly path)


class Batch(NamedTuple):
    ids: list[str]
    targets: Tensor  # [batch]
    transcripts: list[str]
    features: Tensor | None  # [batch, frames, bins]
    feature_lengths: Tensor | None
    waveforms: Tensor | None  # [batch, samples]
    waveform_lengths: Tensor | None


class UtteranceDataset(Dataset):
    """Manifest utterances with their label id, and features from a store or raw waveforms."""

    def __init__(self, manifest: Manifest, labels: LabelSet, store: FeatureStore | None) -> None:
        self.manifest = manifest
        self.targets = [labels.index(u.intent) for u in manifest]
        self.transcripts = [normalize_transcript(u.transcript) for u in manifest]
        self.store = store
        self.waveforms = None if store is not None else WaveformDataset(manifest)
        if store is not None:
            missing = [u.id for u in manifest if u.id not in store]
            if missing:
                raise TrainingError(
                    f"{store.folder}: no features for {len(missing)} utterance(s) of {manifest.path}, "
                    f"first {missing[0]!r} (skipped at extraction, or another manifest)"
                )

    def __len__(self) -> int:
        return len(self.manifest)

    def frames(self, index: int) -> int:
        if self.store is not None:
            return self.store.frame_count(self.manifest[index].id)
        return int(self.manifest[index].duration * 100)

    def __getitem__(self, index: int) -> Example:
        utterance = self.manifest[index]
        if self.store is not None:
            return Example(
                utterance.id,
                self.targets[index],
                self.transcripts[index],
                self.store.features(utterance.id),
                None,
            )
        item = self.waveforms[index]
        if item.error:
            raise TrainingError(item.error)
        return Example(utterance.id, self.targets[index], self.transcripts[index], None, item.waveform)


def collate(examples: list[Example]) -> Batch:
    def pad(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        padded = torch.zeros((len(tensors), int(lengths.max()), *tensors[0].shape[1:]))
        for row, tensor in enumerate(tensors):
            padded[row, : tensor.shape[0]] = tensor
        return padded, lengths

    features = feature_lengths = waveforms = waveform_lengths = None
    if examples[0].features is not None:
        features, feature_lengths = pad([e.features for e in examples])
    else:
        waveforms, waveform_lengths = pad([e.waveform for e in examples])
    return Batch(
        [e.id for e in examples],
        torch.tensor([e.target for e in examples]),
        [e.transcript for e in examples],
        features,
        feature_lengths,
        waveforms,
        waveform_lengths,
    )


class BucketBatchSampler:
    """Length-bucketed batches capped by padded frames, reshuffled per epoch from (seed, epoch).

    Utterances are sorted by length with a little random jitter, cut into batches whose padded
    size stays under ``max_frames``, and the batch order is shuffled. Under DDP every rank gets
    the same number of batches (a few are dropped so the count divides evenly).
    """

    def __init__(self, lengths: list[int], max_frames: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        self.lengths = np.asarray(lengths)
        self.max_frames = max_frames
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        jitter = rng.uniform(0, 0.1, len(self.lengths)) if self.shuffle else np.zeros(len(self.lengths))
        order = np.lexsort((np.arange(len(self.lengths)), self.lengths * (1 + jitter)))
        batches, current, longest = [], [], 0
        for index in order.tolist():
            longest_next = max(longest, int(self.lengths[index]))
            if current and (len(current) + 1) * longest_next > self.max_frames:
                batches.append(current)
                current, longest_next = [], int(self.lengths[index])
            current.append(index)
            longest = longest_next
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[:usable][self.rank :: self.world_size]
        return batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


# ---------------------------------------------------------------------------------------------
# Teacher targets for a batch


class TeacherLookup:
    """Collates the teacher's targets of a batch's transcripts (padded over tokens)."""

    def __init__(
        self, targets, layers: list[int]
    ) -> None:  # targets: pipeline.teacher_targets.TeacherTargets
        self.targets = targets
        self.rows = [targets.layers.index(layer) for layer in layers]

    def check_transcripts(self, transcripts: list[str], where: str) -> None:
        missing = sorted({t for t in transcripts if t not in self.targets})
        if missing:
            raise TrainingError(
                f"{self.targets.folder}: no teacher targets for {len(missing)} transcript(s) of {where}, "
                f"first {missing[0]!r}; re-export them with `slukd teacher export` on this manifest"
            )

    def batch(self, transcripts: list[str], device: torch.device) -> TeacherBatch:
        entries = [self.targets.lookup(t) for t in transcripts]
        token_lengths = torch.tensor([len(e.token_ids) for e in entries])
        tokens = int(token_lengths.max())
        hidden = np.zeros((len(self.rows), len(entries), tokens, self.targets.hidden_size), np.float32)
        attention = np.zeros((len(self.rows), len(entries), tokens, tokens), np.float32)
        for row, entry in enumerate(entries):
            length = len(entry.token_ids)
            hidden[:, row, :length] = entry.hidden[self.rows]
            attention[:, row, :length, :length] = entry.attention[self.rows]
        logits = None
        if entries[0].logits is not None:
            logits = torch.from_numpy(np.stack([e.logits for e in entries]).astype(np.float32)).to(device)
        sentence = torch.from_numpy(np.stack([e.sentence for e in entries]).astype(np.float32)).to(device)
        return TeacherBatch(
            logits=logits,
            sentence=sentence,
            hidden_states=[torch.from_numpy(h).to(device) for h in hidden],
            attentions=[torch.from_numpy(a).to(device) for a in attention],
            token_lengths=token_lengths.to(device),
        )


def ctc_targets(transcripts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
    ids = [[CHARACTERS.index(c) + 1 for c in t if c in CHARACTERS] for t in transcripts]
    lengths = torch.tensor([len(i) for i in ids])
    padded = torch.zeros(len(ids), max(1, int(lengths.max())), dtype=torch.long)
    for row, sequence in enumerate(ids):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded.to(device), lengths.to(device)


def ctc_greedy_decode(log_probs: np.ndarray, lengths: Sequence[int], characters: str) -> list[str]:
    """Best path per utterance: argmax per frame, repeats merged, blanks (id 0) dropped.

    Args:
        log_probs: ``[B, T, V]`` CTC log-probabilities; id ``i > 0`` is ``characters[i - 1]``.
        lengths: valid frames per utterance.
        characters: the vocabulary after the blank.
    """
    best = np.asarray(log_probs).argmax(axis=-1)
    texts = []
    for row, length in zip(best, lengths, strict=True):
        path = row[: int(length)]
        keep = path[(path != 0) & np.concatenate([[True], path[1:] != path[:-1]])]
        text = "".join(characters[i - 1] for i in keep if 0 < i <= len(characters))
        texts.append(" ".join(text.split()))
    return texts


def ctc_infeasible(frames: list[int], transcripts: list[str], subsampling: int) -> int:
    """How many utterances have fewer encoder frames than CTC needs for their characters
    (one frame per character plus one blank between each pair of repeats); their CTC loss is
    infinite and zeroed, so they teach the CTC head nothing."""
    encoder_frames = subsampled_lengths(torch.tensor(frames), subsampling).tolist()
    count = 0
    for available, text in zip(encoder_frames, transcripts, strict=True):
        characters = [c for c in text if c in CHARACTERS]
        needed = len(characters) + sum(a == b for a, b in zip(characters, characters[1:], strict=False))
        count += available < needed
    return count


# ---------------------------------------------------------------------------------------------
# Features on the device


class FeaturePipeline:
    """Turns a batch into CMVN-normalised, optionally augmented features on the device."""

    def __init__(self, fbank: FbankConfig, cmvn_mean: np.ndarray, cmvn_std: np.ndarray,
                 augment: AugmentConfig, device: torch.device) -> None:  # fmt: skip
        self.extractor = FbankExtractor(fbank)
        self.mean = torch.as_tensor(cmvn_mean, device=device)
        self.std = torch.as_tensor(cmvn_std, device=device)
        self.augmenter = Augmenter(augment, fbank.sample_rate)
        self.device = device

    def from_waveforms(self, waveforms: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
        """Padded waveforms ``[B, S]`` and their lengths -> CMVN-normalised fbank (zero beyond
        each length) and frame counts, on the device; no augmentation."""
        features, lengths = self.extractor.extract_batch(waveforms, samples, self.device)
        valid = (torch.arange(features.shape[1], device=self.device)[None] < lengths[:, None]).unsqueeze(-1)
        return ((features - self.mean) / self.std) * valid, lengths

    def __call__(self, batch: Batch, generator: torch.Generator | None, train: bool) -> tuple[Tensor, Tensor]:
        if batch.features is not None:
            features, lengths = batch.features.to(self.device), batch.feature_lengths.to(self.device)
        else:
            waveforms, samples = batch.waveforms.to(self.device), batch.waveform_lengths.to(self.device)
            if train:
                waveforms, samples = self.augmenter(waveforms, samples, generator)
            features, lengths = self.from_waveforms(waveforms, samples)
        if train:
            features = self.augmenter.spec_augment(features, lengths, generator)
        return features, lengths


# ---------------------------------------------------------------------------------------------
# Loss, epochs, evaluation


class Trainable(nn.Module):
    """The student and the loss (which owns W^H), trained together and wrapped by DDP as one."""

    def __init__(self, student: SpeechStudent, loss: DistillationLoss) -> None:
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, features, lengths, targets, teacher, ctc, return_layers):  # noqa: ANN001
        output = self.student(features, lengths, return_layers=return_layers)
        return self.loss(output, targets, teacher, *ctc)


def compute_loss(model: nn.Module, batch: Batch, features: Tensor, lengths: Tensor, config: ExperimentConfig,
                 teacher: TeacherLookup | None, device: torch.device):  # fmt: skip
    """Forward the student and the active losses on one batch; returns the LossBreakdown."""
    distill = config.distill
    targets = batch.targets.to(device)
    teacher_batch = teacher.batch(batch.transcripts, device) if teacher is not None else None
    ctc = ctc_targets(batch.transcripts, device) if distill.ctc > 0 else (None, None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _no_autocast()
    with autocast:
        return model(features, lengths, targets, teacher_batch, ctc, distill.needs_layers)


class _no_autocast:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _check_finite(breakdown, step: int) -> None:
    if torch.isfinite(breakdown.total):
        return
    bad = [name for name, value in breakdown.terms.items() if not torch.isfinite(value)]
    values = ", ".join(f"{name}={float(value.detach())}" for name, value in breakdown.terms.items())
    raise TrainingError(
        f"step {step}: loss is not finite (term{'s' if len(bad) != 1 else ''} {', '.join(bad) or 'total'}; {values}); "
        "the last good checkpoint is kept"
    )


def train_one_epoch(model, optimizer, scheduler, loader, pipeline: FeaturePipeline, config: ExperimentConfig,
                    teacher: TeacherLookup | None, device: torch.device, generator: torch.Generator,
                    step: int, show_progress: bool) -> tuple[dict, int]:  # fmt: skip
    """One pass over the training batches; returns mean loss terms and the new global step."""
    model.train()
    sums: dict[str, float] = {}
    count = 0
    progress = tqdm(loader, desc="train", unit="batch", disable=not show_progress, leave=False)
    for batch in progress:
        features, lengths = pipeline(batch, generator, train=True)
        breakdown = compute_loss(model, batch, features, lengths, config, teacher, device)
        _check_finite(breakdown, step + 1)
        optimizer.zero_grad(set_to_none=True)
        breakdown.total.backward()
        if config.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        count += 1
        for name, value in {"loss": breakdown.total, **breakdown.terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        progress.set_postfix(loss=f"{sums['loss'] / count:.3f}")
    return {name: value / max(count, 1) for name, value in sums.items()}, step


@torch.no_grad()
def predict(
    student: SpeechStudent, loader, pipeline: FeaturePipeline, device: torch.device
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Logits ``[N, C]``, gold ids ``[N]`` and ids of every utterance a loader yields."""
    student.eval()
    logits, targets, ids = [], [], []
    for batch in loader:
        features, lengths = pipeline(batch, None, train=False)
        output = student(features, lengths)
        logits.append(output.logits.float().cpu().numpy())
        targets.append(batch.targets.numpy())
        ids += batch.ids
    return np.concatenate(logits), np.concatenate(targets), ids


def accuracy_and_loss(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    log_probs = torch.from_numpy(logits).log_softmax(-1)
    loss = float(torch.nn.functional.nll_loss(log_probs, torch.from_numpy(targets)))
    return float((logits.argmax(-1) == targets).mean()), loss


# ---------------------------------------------------------------------------------------------
# Checkpoints and the model dir


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_position": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    python = state["python"]
    random.setstate((3, tuple(int(x) for x in python[:-1]), None))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_position"], 0, 0.0)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model_dir(folder: Path, student: SpeechStudent, config: ExperimentConfig, fbank: FbankConfig,
                   cmvn: tuple[np.ndarray, np.ndarray], labels: LabelSet, metrics: dict) -> None:  # fmt: skip
    """The self-contained student dir: config.json, model.safetensors, labels.json, metrics.json."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in student.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    write_json(
        folder / "config.json",
        {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "student": to_dict(config.student),
            "features": to_dict(fbank),
            "cmvn": {"mean": [float(x) for x in cmvn[0]], "std": [float(x) for x in cmvn[1]]},
            "labels": labels.to_dict(),
            "ctc_characters": CHARACTERS if config.student.ctc_vocab_size else None,
            "training": config.to_dict(),
        },
    )
    labels.save(folder / "labels.json")
    write_json(folder / "metrics.json", metrics)


def load_student(model_dir: str | os.PathLike) -> tuple[SpeechStudent, dict]:
    """Load a student model dir (no pickle: safetensors weights, JSON config)."""
    folder = Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise TrainingError(f"{folder}: not a student model dir ({name} is missing)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("format") != MODEL_FORMAT or config.get("version", 0) > MODEL_VERSION:
        raise TrainingError(
            f"{folder}: model format {config.get('format')!r} v{config.get('version')} is not one this slukd reads "
            f"({MODEL_FORMAT} v{MODEL_VERSION})"
        )
    student = SpeechStudent(from_dict(StudentConfig, config["student"]))
    student.load_state_dict(load_file(str(folder / "model.safetensors")))
    return student.eval(), config


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainInputs:
    """Where a run reads from: manifests, feature stores, teacher targets."""

    train_manifest: Path
    valid_manifest: Path
    train_features: Path
    valid_features: Path
    teacher_targets: Path | None = None


def _fingerprint(inputs: TrainInputs, config: ExperimentConfig) -> dict:
    digest = hashlib.sha256()
    for path in (inputs.train_manifest, inputs.valid_manifest):
        digest.update(Path(path).read_bytes())
    settings = config.to_dict()
    return {"inputs_sha256": digest.hexdigest(), "config": json.loads(json.dumps(settings, default=str))}


def train_student(inputs: TrainInputs, output_dir: str | os.PathLike, config: ExperimentConfig,
                  epoch_budget: int | None = None) -> dict:  # fmt: skip
    """Train (or resume, or skip) one student run; under torchrun every rank calls this.

    Args:
        inputs: manifests, feature stores and (for distillation) teacher targets.
        output_dir: the run folder; the model dir is written here when training ends.
        config: the experiment config.
        epoch_budget: run at most this many epochs in this call, then return (resumable).

    Returns:
        The run's metrics (best valid accuracy, epochs, timing, ...).
    """
    output_dir = Path(output_dir)
    fingerprint = _fingerprint(inputs, config)
    if is_done(output_dir, fingerprint):
        logger.info("%s: student already trained with this config, skipping", output_dir)
        return json.loads((output_dir / "metrics.json").read_text())
    rank, world_size = distributed.rank_and_world()
    device = distributed.local_device(resolve_device(config.train.device))
    return run(rank, world_size, device, inputs, output_dir, config, fingerprint, epoch_budget)


def _prepare_data(inputs: TrainInputs, config: ExperimentConfig):
    labels_path = inputs.train_manifest.parent / "labels.json"
    labels = LabelSet.load(labels_path)
    train_manifest = read_manifest(inputs.train_manifest, labels)
    valid_manifest = read_manifest(inputs.valid_manifest, labels)
    if config.student.num_intents not in (0, len(labels)):
        raise TrainingError(
            f"the student config has {config.student.num_intents} intents but {labels_path} has {len(labels)}; "
            "set student.num_intents to match"
        )
    fraction = config.train.train_fraction
    if not 0 < fraction <= 1:
        raise TrainingError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction < 1:
        rng = np.random.default_rng(config.train.seed)
        keep = sorted(
            rng.permutation(len(train_manifest))[: max(1, round(fraction * len(train_manifest)))].tolist()
        )
        train_manifest = Manifest([train_manifest[i] for i in keep], train_manifest.path)
    train_store, valid_store = FeatureStore(inputs.train_features), FeatureStore(inputs.valid_features)
    fbank = train_store.config
    valid_store.check_compatible(fbank)
    train_store.check_compatible(fbank, inputs.train_manifest)
    valid_store.check_compatible(fbank, inputs.valid_manifest)
    if fbank.num_mel_bins != config.student.num_mel_bins:
        raise TrainingError(
            f"{inputs.train_features}: features have {fbank.num_mel_bins} mel bins, the student expects "
            f"{config.student.num_mel_bins}; set student.num_mel_bins or rebuild the features"
        )
    on_the_fly = config.train.on_the_fly or config.augment.speed_perturb or config.augment.noise_prob > 0
    train_set = UtteranceDataset(train_manifest, labels, None if on_the_fly else train_store)
    valid_set = UtteranceDataset(valid_manifest, labels, valid_store)
    return labels, train_set, valid_set, train_store, fbank


def _load_teacher(inputs: TrainInputs, config: ExperimentConfig, labels: LabelSet, layer_map: list[int],
                  train_set: UtteranceDataset) -> TeacherLookup | None:  # fmt: skip
    if not config.distill.needs_teacher:
        return None
    if inputs.teacher_targets is None:
        needing = [name for name in config.distill.active() if name not in ("ce", "ctc")]
        raise TrainingError(f"losses {', '.join(needing)} need teacher targets (--teacher-targets)")
    from pipeline.teacher import TeacherError
    from pipeline.teacher_targets import TeacherTargets

    try:
        targets = TeacherTargets(inputs.teacher_targets)
        targets.check(
            labels if config.distill.logits > 0 else None, layer_map if config.distill.needs_layers else []
        )
    except TeacherError as error:
        raise TrainingError(str(error)) from None
    lookup = TeacherLookup(targets, layer_map if config.distill.needs_layers else [])
    lookup.check_transcripts(train_set.transcripts, str(inputs.train_manifest))
    return lookup


def run(rank: int, world_size: int, device: torch.device, inputs: TrainInputs, output_dir: Path,
        config: ExperimentConfig, fingerprint: dict, epoch_budget: int | None = None) -> dict:  # fmt: skip
    """One rank's training run (resuming from the last checkpoint when there is one)."""
    train_config = config.train
    torch.manual_seed(train_config.seed)
    random.seed(train_config.seed)
    np.random.seed(train_config.seed)
    labels, train_set, valid_set, train_store, fbank = _prepare_data(inputs, config)

    teacher_layers = 0
    layer_map: list[int] = []
    teacher_dim = 0
    if config.distill.needs_teacher and inputs.teacher_targets is not None:
        meta = json.loads((Path(inputs.teacher_targets) / "meta.json").read_text())
        teacher_layers, teacher_dim = int(meta["num_layers"]), int(meta["hidden_size"])
        layer_map = uniform_layer_map(config.student.num_layers, teacher_layers)
    teacher = _load_teacher(inputs, config, labels, layer_map, train_set)

    student_config = from_dict(StudentConfig, {
        **to_dict(config.student),
        "teacher_dim": teacher_dim if config.distill.sentence > 0 else 0,
        "ctc_vocab_size": len(CHARACTERS) + 1 if config.distill.ctc > 0 else 0,
        "num_intents": len(labels),  # checked against the config in _prepare_data (0: from labels)
    })  # fmt: skip
    config = ExperimentConfig(config.train, student_config, config.distill, config.augment)
    student = SpeechStudent(student_config)
    loss = DistillationLoss(config.distill, student_config.d_model, teacher_dim, layer_map)
    trainable = Trainable(student, loss).to(device)
    model: nn.Module = trainable
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None
        )

    if config.distill.ctc > 0 and rank == 0:
        frames = [train_set.frames(i) for i in range(len(train_set))]
        short = ctc_infeasible(frames, train_set.transcripts, student_config.subsampling)
        if short:
            logger.warning(
                "ctc: %d of %d training utterances have fewer encoder frames (subsampling x%d) than "
                "their transcript's characters; their CTC loss is zero (use subsampling 4 for a CTC head)",
                short, len(frames), student_config.subsampling,
            )  # fmt: skip
    sampler = BucketBatchSampler(
        [train_set.frames(i) for i in range(len(train_set))], train_config.max_frames, train_config.seed,
        shuffle=True, rank=rank, world_size=world_size,
    )  # fmt: skip
    loader = DataLoader(
        train_set, batch_sampler=sampler, collate_fn=collate, num_workers=train_config.num_workers
    )
    valid_sampler = BucketBatchSampler(
        [valid_set.frames(i) for i in range(len(valid_set))], train_config.max_frames, 0, shuffle=False
    )
    valid_loader = DataLoader(
        valid_set, batch_sampler=valid_sampler, collate_fn=collate, num_workers=train_config.num_workers
    )
    pipeline = FeaturePipeline(fbank, train_store.cmvn_mean, train_store.cmvn_std, config.augment, device)

    steps_per_epoch = len(sampler)
    total_steps = max(1, steps_per_epoch * train_config.epochs)
    optimizer = torch.optim.AdamW(
        trainable.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )

    def schedule(step: int) -> float:
        if step < train_config.warmup_steps:
            return (step + 1) / train_config.warmup_steps
        progress = (step - train_config.warmup_steps) / max(1, total_steps - train_config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(train_config.seed)

    checkpoint_dir = output_dir / "checkpoints"
    state = {"epoch": 0, "step": 0, "best_accuracy": -1.0, "best_loss": float("inf"), "best_epoch": 0,
             "stale_epochs": 0, "log": [], "history": []}  # fmt: skip
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "experiment.json", config.to_dict())
    distributed.barrier()
    latest = _latest_checkpoint(checkpoint_dir)
    if latest is not None:
        saved = torch.load(latest, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != json.loads(json.dumps(fingerprint)):
            raise TrainingError(
                f"{latest}: checkpoint of another config or data; use another output dir or remove it"
            )
        trainable.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = json.loads(saved["state"])
        _set_rng_state(saved["rng"], generator)
        logger.info("resuming from %s (epoch %d, step %d)", latest, state["epoch"], state["step"])

    logger.info(
        "student: %.2fM parameters; losses %s; %d training utterances, %d batches per epoch on %s x %d",
        student.num_parameters() / 1e6, ", ".join(config.distill.active()), len(train_set), steps_per_epoch,
        device, world_size,
    )  # fmt: skip
    start = time.monotonic()
    epochs_run = 0
    utterances_seen = 0
    while state["epoch"] < train_config.epochs:
        if train_config.patience and state["stale_epochs"] >= train_config.patience:
            logger.info("early stop: no better valid accuracy for %d epochs", state["stale_epochs"])
            break
        if epoch_budget is not None and epochs_run >= epoch_budget:
            return {"interrupted_at_epoch": state["epoch"]}
        epoch = state["epoch"] + 1
        sampler.set_epoch(epoch)
        epoch_start = time.monotonic()
        terms, state["step"] = train_one_epoch(
            model,
            optimizer,
            scheduler,
            loader,
            pipeline,
            config,
            teacher,
            device,
            generator,
            state["step"],
            rank == 0,
        )
        train_seconds = time.monotonic() - epoch_start
        utterances_seen += sum(len(b) for b in sampler.batches())
        logits, targets, _ = predict(student, valid_loader, pipeline, device)
        valid_accuracy, valid_loss = accuracy_and_loss(logits, targets)
        improved = valid_accuracy > state["best_accuracy"] or (
            valid_accuracy == state["best_accuracy"] and valid_loss < state["best_loss"]
        )
        if improved:
            state.update(best_accuracy=valid_accuracy, best_loss=valid_loss, best_epoch=epoch, stale_epochs=0)
        else:
            state["stale_epochs"] += 1
        row = {"epoch": epoch, "step": state["step"], "lr": scheduler.get_last_lr()[0],
               **{f"train_{k}": round(v, 5) for k, v in terms.items()},
               "valid_accuracy": round(valid_accuracy, 5), "valid_loss": round(valid_loss, 5),
               "seconds": round(train_seconds, 2)}  # fmt: skip
        state["log"].append(row)
        state["history"].append({"epoch": epoch, "valid_accuracy": valid_accuracy, "valid_loss": valid_loss})
        state["epoch"] = epoch
        epochs_run += 1
        logger.info(
            "epoch %d: loss %.4f (%s) valid accuracy %.4f loss %.4f%s [%.1f s]",
            epoch, terms.get("loss", float("nan")),
            ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k != "loss"),
            valid_accuracy, valid_loss, " *" if improved else "", train_seconds,
        )  # fmt: skip
        if rank == 0:
            _save_checkpoint(checkpoint_dir, epoch, trainable, optimizer, scheduler, state, generator, fingerprint,
                             keep=max(1, train_config.average_best), improved=improved)  # fmt: skip
            _write_log(output_dir / "train_log.csv", state["log"])
        distributed.barrier()

    metrics = {
        "best_epoch": state["best_epoch"],
        "valid_accuracy": state["best_accuracy"],
        "valid_loss": state["best_loss"],
        "epochs": state["epoch"],
        "steps": state["step"],
        "parameters": student.num_parameters(),
        "train_seconds_this_run": round(time.monotonic() - start, 2),
        "train_utterances_per_second": round(
            utterances_seen * world_size / max(time.monotonic() - start, 1e-9), 2
        ),
        "losses": config.distill.active(),
    }
    if rank == 0:
        final = _final_weights(checkpoint_dir, state, train_config.average_best, trainable)
        student.load_state_dict(final)
        if train_config.average_best > 1:
            logits, targets, _ = predict(student, valid_loader, pipeline, device)
            metrics["valid_accuracy_averaged"], _ = accuracy_and_loss(logits, targets)
        with atomic_directory(output_dir.with_name(output_dir.name + ".model")) as folder:
            save_model_dir(
                folder,
                student.cpu(),
                config,
                fbank,
                (train_store.cmvn_mean, train_store.cmvn_std),
                labels,
                metrics,
            )
        for name in ("config.json", "model.safetensors", "labels.json", "metrics.json"):
            os.replace(output_dir.with_name(output_dir.name + ".model") / name, output_dir / name)
        shutil.rmtree(output_dir.with_name(output_dir.name + ".model"), ignore_errors=True)
        mark_done(output_dir, fingerprint)
        logger.info(
            "%s: best valid accuracy %.4f at epoch %d",
            output_dir,
            state["best_accuracy"],
            state["best_epoch"],
        )
    distributed.barrier()
    return metrics


def _latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob("epoch-*.pt")) if folder.is_dir() else []
    return checkpoints[-1] if checkpoints else None


def _save_checkpoint(folder: Path, epoch: int, trainable: Trainable, optimizer, scheduler, state: dict,
                     generator: torch.Generator, fingerprint: dict, keep: int, improved: bool) -> None:  # fmt: skip
    """Write ``epoch-NNNN.pt`` atomically; keep the latest and the ``keep`` best."""
    path = folder / f"epoch-{epoch:04d}.pt"
    temporary = path.with_suffix(".pt.tmp")
    torch.save(
        {
            "model": trainable.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": json.dumps(state),
            "rng": _rng_state(generator),
            "fingerprint": json.loads(json.dumps(fingerprint)),
        },
        temporary,
    )
    os.replace(temporary, path)
    ranked = sorted(state["history"], key=lambda h: (-h["valid_accuracy"], h["valid_loss"]))
    wanted = {h["epoch"] for h in ranked[:keep]} | {epoch}
    for old in folder.glob("epoch-*.pt"):
        if int(old.stem.split("-")[1]) not in wanted:
            old.unlink()


def _final_weights(folder: Path, state: dict, average_best: int, trainable: Trainable) -> dict:
    """The best epoch's student weights, or the average of the ``average_best`` best."""
    ranked = sorted(state["history"], key=lambda h: (-h["valid_accuracy"], h["valid_loss"]))
    chosen = [h["epoch"] for h in ranked[: max(1, average_best)]]
    states = []
    for epoch in chosen:
        path = folder / f"epoch-{epoch:04d}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
            states.append({k[len("student.") :]: v for k, v in saved.items() if k.startswith("student.")})
    if not states:
        return trainable.student.state_dict()
    if len(states) == 1:
        return states[0]
    logger.info("averaging the weights of epochs %s", chosen[: len(states)])
    return {key: sum(s[key].float() for s in states) / len(states) for key in states[0]}


def _write_log(path: Path, rows: list[dict]) -> None:
    names = list(dict.fromkeys(key for row in rows for key in row))
    temporary = path.with_suffix(".csv.tmp")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def evaluate_on_store(model_dir: str | os.PathLike, manifest_path: str | os.PathLike, store_dir: str | os.PathLike,
                      device: str = "auto", max_frames: int = 40000) -> dict:  # fmt: skip
    """Accuracy of a student model dir on a split's feature store (its CMVN comes from the model)."""
    student, saved = load_student(model_dir)
    labels = LabelSet.from_dict(saved["labels"])
    manifest = read_manifest(manifest_path, labels)
    store = FeatureStore(store_dir)
    store.check_compatible(from_dict(FbankConfig, saved["features"]), manifest_path)
    dataset = UtteranceDataset(manifest, labels, store)
    sampler = BucketBatchSampler(
        [dataset.frames(i) for i in range(len(dataset))], max_frames, 0, shuffle=False
    )
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    device = resolve_device(device)
    pipeline = FeaturePipeline(store.config, store.cmvn_mean, store.cmvn_std, AugmentConfig(), device)
    # Features in the store are normalised with the store's own CMVN on read; renormalise with
    # the statistics the model was trained with.
    model_mean = np.asarray(saved["cmvn"]["mean"], np.float32)
    model_std = np.asarray(saved["cmvn"]["std"], np.float32)
    store.cmvn_mean, store.cmvn_std = model_mean, model_std
    logits, targets, _ = predict(student.to(device), loader, pipeline, device)
    accuracy, loss = accuracy_and_loss(logits, targets)
    return {"accuracy": accuracy, "loss": loss, "utterances": len(targets)}
