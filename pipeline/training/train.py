"""Training a student of any family: CE-only or distilled from the teacher's targets.

Named parts, after icefall: :class:`TrainConfig` (params with documented defaults),
:func:`compute_loss`, :func:`train_one_epoch`, :func:`run` (one rank), :func:`train_student`
(the library entry point ``slukd train`` wraps).

- the student comes from the registry (:mod:`pipeline.students.registry`, ``student.family``; a new
  student of a pretrained family loads its weights with ``from_pretrained``), its front-end
  from the family's ``default_frontend()`` with the feature store's settings and the *train*
  store's statistics; training, validation and the saved model normalise alike;
- a student with a frozen bottom trains, without augmentation, on its bottom's outputs stored
  once per split (:mod:`pipeline.training.encoder_cache`, ``train.cache_frozen``); with waveform
  augmentation, on the clean states and ``train.cache_augmented_copies`` augmented copies;
- AdamW over the family's parameter groups (pretrained parts at ``pretrained_lr`` with
  layer-wise decay and their own warm-up), linear warm-up and cosine decay
  (:mod:`pipeline.core.schedule`), gradient clipping, bf16 autocast on GPU;
- batches bucketed by length and capped by total (padded) frames, reshuffled per epoch from
  ``(seed, epoch)`` (:class:`pipeline.data.batching.LengthBucketSampler`), so that a resumed run sees
  exactly the batches an uninterrupted one would;
- raw features from the store, or computed on the fly from waveforms when waveform
  augmentation (speed, noise) is on or the family's front-end is not the store's; SpecAugment
  on either;
- DDP under torchrun (NCCL on GPU, gloo on CPU);
- a checkpoint each epoch (:mod:`pipeline.training.checkpoint`); selection and early stopping on the
  valid split only; optional averaging of the best epochs;
- ``train_log.csv``, a progress bar, and the final self-contained model dir
  (:mod:`pipeline.serving.model_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pipeline.augment.augmentation import AugmentConfig
from pipeline.core import distributed
from pipeline.core.config import ConfigError, to_dict
from pipeline.core.devices import resolve_device
from pipeline.core.errors import SlukdError
from pipeline.core.io import is_done, mark_done, write_json
from pipeline.core.schedule import autocast, warmup_decay, write_training_log
from pipeline.data.batching import Batch, LengthBucketSampler, UtteranceDataset, collate
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest
from pipeline.frontends.feature_store import FeatureStore
from pipeline.serving.model_dir import load_model_dir, save_model_dir
from pipeline.students.ctc import CHARACTERS, ctc_infeasible, ctc_targets, vocab_size
from pipeline.students.finetune import group_lr_lambdas
from pipeline.students.registry import new_student, num_parameters, student_config
from pipeline.training import slots as slot_heads
from pipeline.training.checkpoint import average_best, latest_checkpoint, load_checkpoint, save_checkpoint
from pipeline.training.experiment import ExperimentConfig, TrainConfig, load_experiment_config
from pipeline.training.losses import DistillationLoss, uniform_layer_map
from pipeline.training.teacher_batches import TeacherLookup
from pipeline.training.train_data import (
    FrozenInputs,
    TrainData,
    TrainingFeatures,
    TrainInputs,
    frozen_cache_wanted,
    prepare_data,
    read_manifests,
    with_frozen_cache,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ExperimentConfig",
    "TrainConfig",
    "TrainInputs",
    "TrainingError",
    "evaluate_on_store",
    "load_experiment_config",
    "train_student",
]


class TrainingError(SlukdError):
    """Training cannot go on (bad inputs, a non-finite loss)."""


# ---------------------------------------------------------------------------------------------
# Loss, epochs, evaluation


class Trainable(nn.Module):
    """The student and the loss (which owns W^H), trained together and wrapped by DDP as one."""

    def __init__(self, student: nn.Module, loss: DistillationLoss) -> None:
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, features, lengths, targets, teacher, ctc, return_layers, from_frozen=False,
                slot_targets=None):  # noqa: ANN001  # fmt: skip
        output = run_student(self.student, features, lengths, return_layers, from_frozen)
        return self.loss(output, targets, teacher, *ctc, slot_targets)


def run_student(student: nn.Module, inputs: Tensor, lengths: Tensor, return_layers: bool = False,
                from_frozen: bool = False):  # fmt: skip
    """The student's output on front-end features, or (``from_frozen``) on its frozen bottom's stored states."""
    if from_frozen:
        return student.forward_from_frozen(inputs, lengths, return_layers=return_layers)
    return student(inputs, lengths, return_layers=return_layers)


def compute_loss(model: nn.Module, batch: Batch, features: Tensor, lengths: Tensor, config: ExperimentConfig,
                 teacher: TeacherLookup | None, device: torch.device, from_frozen: bool = False):  # fmt: skip
    """Forward the student and the active losses on one batch; returns the LossBreakdown.
    ``from_frozen``: ``features`` are the student's stored frozen-bottom states."""
    distill = config.distill
    targets = batch.targets.to(device)
    teacher_batch = teacher.batch(batch.transcripts, device) if teacher is not None else None
    ctc = ctc_targets(batch.transcripts, device) if distill.ctc > 0 else (None, None)
    slots = batch.slot_targets.to(device) if batch.slot_targets is not None else None
    with autocast(device):
        return model(features, lengths, targets, teacher_batch, ctc, distill.needs_layers, from_frozen, slots)


def _check_finite(breakdown, step: int) -> None:
    if torch.isfinite(breakdown.total):
        return
    bad = [name for name, value in breakdown.terms.items() if not torch.isfinite(value)]
    values = ", ".join(f"{name}={float(value.detach())}" for name, value in breakdown.terms.items())
    raise TrainingError(
        f"step {step}: loss is not finite (term{'s' if len(bad) != 1 else ''} {', '.join(bad) or 'total'}; {values}); "
        "the last good checkpoint is kept"
    )


def train_one_epoch(model, optimizer, scheduler, loader, features: TrainingFeatures | FrozenInputs,
                    config: ExperimentConfig,
                    teacher: TeacherLookup | None, device: torch.device, generator: torch.Generator,
                    step: int, show_progress: bool) -> tuple[dict, int]:  # fmt: skip
    """One pass over the training batches; returns mean loss terms and the new global step."""
    from tqdm import tqdm

    model.train()
    sums: dict[str, float] = {}
    count = 0
    progress = tqdm(loader, desc="train", unit="batch", disable=not show_progress, leave=False)
    for batch in progress:
        inputs, lengths = features(batch, generator, train=True)
        breakdown = compute_loss(model, batch, inputs, lengths, config, teacher, device, features.from_frozen)
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
    student: nn.Module, loader, features: TrainingFeatures | FrozenInputs, device: torch.device
) -> slot_heads.Predicted:
    """Intent logits ``[N, C]``, gold ids ``[N]``, ids, and slot logits and gold slot classes of
    every utterance a loader yields."""
    student.eval()
    logits, targets, ids, slots, slot_targets = [], [], [], {}, []
    for batch in loader:
        inputs, lengths = features(batch, None, train=False)
        output = run_student(student, inputs, lengths, from_frozen=features.from_frozen)
        logits.append(output.logits.float().cpu().numpy())
        targets.append(batch.targets.numpy())
        ids += batch.ids
        for name, values in output.slot_logits.items():
            slots.setdefault(name, []).append(values.float().cpu().numpy())
        if output.slot_logits and batch.slot_targets is not None:
            slot_targets.append(batch.slot_targets.numpy())
    slot_logits = {name: np.concatenate(values) for name, values in slots.items()}
    slot_gold = np.concatenate(slot_targets) if slot_targets else None
    return slot_heads.Predicted(np.concatenate(logits), np.concatenate(targets), ids, slot_logits, slot_gold)


def accuracy_and_loss(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    log_probs = torch.from_numpy(logits).log_softmax(-1)
    loss = float(torch.nn.functional.nll_loss(log_probs, torch.from_numpy(targets)))
    return float((logits.argmax(-1) == targets).mean()), loss


def optimizer_and_scheduler(trainable: Trainable, config: TrainConfig, total_steps: int):
    """AdamW over the student's parameter groups (+ the loss's), and the per-group LR schedule."""
    groups = trainable.student.parameter_groups(
        config.learning_rate, config.pretrained_lr, config.layer_decay
    )
    loss_parameters = [p for p in trainable.loss.parameters() if p.requires_grad]
    if loss_parameters:
        groups.append({"params": loss_parameters, "lr": config.learning_rate})
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    factors = group_lr_lambdas(
        groups, warmup_decay(config.warmup_steps, total_steps, "cosine"),
        config.pretrained_freeze_steps, config.pretrained_warmup_steps,
    )  # fmt: skip
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


# ---------------------------------------------------------------------------------------------
# The run


def _fingerprint(inputs: TrainInputs, config: ExperimentConfig) -> dict:
    digest = hashlib.sha256()
    for path in (inputs.train_manifest, inputs.valid_manifest):
        digest.update(Path(path).read_bytes())
    settings = slot_heads.fingerprint_settings(
        config.to_dict(), Path(inputs.train_manifest).parent / "labels.json"
    )
    if not settings["train"]["cache_augmented_copies"]:  # runs from before the setting keep their fingerprint
        del settings["train"]["cache_augmented_copies"]
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


def _teacher_shape(inputs: TrainInputs, config: ExperimentConfig) -> tuple[int, int]:
    """The teacher's layer count and width (0, 0 when no teacher is needed or given)."""
    if not (config.distill.needs_teacher and inputs.teacher_targets is not None):
        return 0, 0
    meta = json.loads((Path(inputs.teacher_targets) / "meta.json").read_text())
    return int(meta["num_layers"]), int(meta["hidden_size"])


def _load_teacher(inputs: TrainInputs, config: ExperimentConfig, labels: LabelSet, layer_map: list[int],
                  train_set: UtteranceDataset) -> TeacherLookup | None:  # fmt: skip
    if not config.distill.needs_teacher:
        return None
    if inputs.teacher_targets is None:
        needing = [name for name in config.distill.active() if name not in ("ce", "ctc", "slot_ce")]
        raise TrainingError(f"losses {', '.join(needing)} need teacher targets (--teacher-targets)")
    from pipeline.teacher.targets import TeacherTargets
    from pipeline.teacher.train import TeacherError

    try:
        targets = TeacherTargets(inputs.teacher_targets)
        targets.check(
            labels if config.distill.logits > 0 else None, layer_map if config.distill.needs_layers else []
        )
    except TeacherError as error:
        raise TrainingError(str(error)) from None
    if (config.distill.slot_logits or 0.0) > 0:
        try:
            slot_heads.check_teacher_slots(targets, labels)
        except ValueError as error:
            raise TrainingError(str(error)) from None
    lookup = TeacherLookup(targets, layer_map if config.distill.needs_layers else [])
    missing = lookup.missing(train_set.transcripts)
    if missing:
        raise TrainingError(
            f"{targets.folder}: no teacher targets for {len(missing)} transcript(s) of {inputs.train_manifest}, "
            f"first {missing[0]!r}; re-export them with `slukd teacher export` on this manifest"
        )
    return lookup


def _build_student(config: ExperimentConfig, labels: LabelSet, teacher_dim: int,
                   teacher_targets: Path | None = None) -> ExperimentConfig:  # fmt: skip
    """The experiment config with the student's config completed from the data and the losses
    (the slot heads and slot loss weights: :func:`pipeline.training.slots.slot_settings`)."""
    distill, slot_classes = slot_heads.slot_settings(config.distill, labels, teacher_targets)
    student = student_config(config.family, {
        **to_dict(config.student),
        "teacher_dim": teacher_dim if config.distill.sentence > 0 else 0,
        "ctc_vocab_size": vocab_size() if config.distill.ctc > 0 else 0,
        "num_intents": len(labels),  # checked against the config in _read_manifests (0: from labels)
        "slot_classes": slot_classes,
    })  # fmt: skip
    return ExperimentConfig(config.train, student, distill, config.augment, config.family)


def _check_layer_losses(config: ExperimentConfig, student: nn.Module) -> None:
    """The hidden and attention losses need trainable student layers to map teacher layers onto."""
    if config.distill.needs_layers and student.num_layers == 0:
        freeze = getattr(student.config, "freeze", None)
        raise ConfigError(
            f"distill.hidden/attention map teacher layers onto the student's trainable layers, and the "
            f"{config.family} student has none{f' (freeze: {freeze}, extra_layers: 0)' if freeze else ''}; "
            "set student.extra_layers > 0 or a freeze that trains layers (top:N), or distill.hidden=0 and "
            "distill.attention=0"
        )


def _warn_ctc_infeasible(student: nn.Module, data: TrainData) -> None:
    frames = data.encoder_frames(student)
    short = ctc_infeasible(frames.tolist(), data.train.transcripts)
    if short:
        logger.warning(
            "ctc: %d of %d training utterances have fewer encoder frames than their transcript's "
            "characters; their CTC loss is zero (use less subsampling for a CTC head)", short, len(frames),
        )  # fmt: skip


def run(rank: int, world_size: int, device: torch.device, inputs: TrainInputs, output_dir: Path,
        config: ExperimentConfig, fingerprint: dict, epoch_budget: int | None = None) -> dict:  # fmt: skip
    """One rank's training run (resuming from the last checkpoint when there is one)."""
    train_config = config.train
    torch.manual_seed(train_config.seed)
    random.seed(train_config.seed)
    np.random.seed(train_config.seed)
    labels, train_manifest, valid_manifest = read_manifests(inputs, config)
    teacher_layers, teacher_dim = _teacher_shape(inputs, config)
    config = _build_student(config, labels, teacher_dim, inputs.teacher_targets)
    student = new_student(config.family, config.student)
    data = prepare_data(inputs, config, student, labels, train_manifest, valid_manifest)
    _check_layer_losses(config, student)
    layer_map = uniform_layer_map(student.num_layers, teacher_layers) if teacher_layers else []
    teacher = _load_teacher(inputs, config, labels, layer_map, data.train)
    loss = DistillationLoss(config.distill, student.hidden_size, teacher_dim, layer_map)
    trainable = Trainable(student, loss).to(device)
    if frozen_cache_wanted(config, student):
        data = with_frozen_cache(data, student, config, inputs, device, rank)
    model: nn.Module = trainable
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.distill.ctc > 0 and rank == 0:
        _warn_ctc_infeasible(student, data)

    sampler = LengthBucketSampler(
        data.train_lengths, train_config.max_frames, train_config.seed,
        shuffle=True, rank=rank, world_size=world_size,
    )  # fmt: skip
    loader = DataLoader(
        data.train, batch_sampler=sampler, collate_fn=collate, num_workers=train_config.num_workers
    )
    valid_sampler = LengthBucketSampler(data.valid_lengths, train_config.max_frames, 0, shuffle=False)
    valid_loader = DataLoader(
        data.valid, batch_sampler=valid_sampler, collate_fn=collate, num_workers=train_config.num_workers
    )
    features = (
        FrozenInputs(device) if data.frozen else TrainingFeatures(data.frontend, config.augment, device)
    )

    steps_per_epoch = len(sampler)
    total_steps = max(1, steps_per_epoch * train_config.epochs)
    optimizer, scheduler = optimizer_and_scheduler(trainable, train_config, total_steps)
    generator = torch.Generator().manual_seed(train_config.seed)

    checkpoint_dir = output_dir / "checkpoints"
    state = {"epoch": 0, "step": 0, "best_accuracy": -1.0, "best_loss": float("inf"), "best_epoch": 0,
             "stale_epochs": 0, "log": [], "history": []}  # fmt: skip
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "experiment.json", config.to_dict())
    distributed.barrier()
    latest = latest_checkpoint(checkpoint_dir)
    if latest is not None:
        state = load_checkpoint(latest, trainable, optimizer, scheduler, generator, fingerprint)
        logger.info("resuming from %s (epoch %d, step %d)", latest, state["epoch"], state["step"])

    logger.info(
        "%s student: %.2fM parameters; losses %s; %d training utterances, %d batches per epoch on %s x %d",
        config.family, num_parameters(student) / 1e6, ", ".join(config.distill.active()), len(data.train),
        steps_per_epoch, device, world_size,
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
        data.set_epoch(epoch)  # augmented copies in the frozen cache: which version each utterance reads
        epoch_start = time.monotonic()
        terms, state["step"] = train_one_epoch(
            model, optimizer, scheduler, loader, features, config, teacher, device, generator, state["step"],
            rank == 0,
        )  # fmt: skip
        train_seconds = time.monotonic() - epoch_start
        utterances_seen += sum(len(b) for b in sampler.batches())
        predicted = predict(student, valid_loader, features, device)
        valid_accuracy, valid_loss = accuracy_and_loss(predicted.logits, predicted.targets)
        valid_command = slot_heads.command_acceptance(predicted)  # with slot heads, what selection reads
        score = valid_accuracy if valid_command is None else valid_command
        improved = score > state["best_accuracy"] or (
            score == state["best_accuracy"] and valid_loss < state["best_loss"]
        )
        if improved:
            state.update(best_accuracy=score, best_loss=valid_loss, best_epoch=epoch, stale_epochs=0)
        else:
            state["stale_epochs"] += 1
        row = {"epoch": epoch, "step": state["step"], "lr": scheduler.get_last_lr()[0],
               **{f"train_{k}": round(v, 5) for k, v in terms.items()},
               "valid_accuracy": round(valid_accuracy, 5), "valid_loss": round(valid_loss, 5),
               **({} if valid_command is None else {"valid_command_acceptance": round(valid_command, 5)}),
               "seconds": round(train_seconds, 2)}  # fmt: skip
        state["log"].append(row)
        state["history"].append({"epoch": epoch, "valid_accuracy": score, "valid_loss": valid_loss})
        state["epoch"] = epoch
        epochs_run += 1
        logger.info(
            "epoch %d: loss %.4f (%s) valid accuracy %.4f%s loss %.4f%s [%.1f s]",
            epoch, terms.get("loss", float("nan")),
            ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k != "loss"), valid_accuracy,
            "" if valid_command is None else f" commands {valid_command:.4f}", valid_loss, " *" if improved else "",
            train_seconds,
        )  # fmt: skip
        if rank == 0:
            save_checkpoint(checkpoint_dir, epoch, trainable, optimizer, scheduler, state, generator, fingerprint,
                            keep=max(1, train_config.average_best))  # fmt: skip
            write_training_log(output_dir / "train_log.csv", state["log"])
        distributed.barrier()

    # valid_accuracy: the score that selected the epoch, command acceptance with slot heads (valid_selected_on)
    selected_on = (
        "command_acceptance" if any("valid_command_acceptance" in row for row in state["log"]) else "accuracy"
    )
    seconds = time.monotonic() - start
    metrics = {"best_epoch": state["best_epoch"], "valid_selected_on": selected_on,
               "valid_accuracy": state["best_accuracy"], "valid_loss": state["best_loss"], "epochs": state["epoch"],
               "steps": state["step"], "parameters": num_parameters(student), "train_seconds_this_run": round(seconds, 2),
               "train_utterances_per_second": round(utterances_seen * world_size / max(seconds, 1e-9), 2),
               "losses": config.distill.active(),
               # a grammar corpus's held-out phrasings trained on (train_rest): valid is not held out
               "held_out_phrasings_trained": sum(u.extra.get("phrasing") == "unseen" for u in data.train.manifest)}  # fmt: skip
    if rank == 0:
        final = average_best(checkpoint_dir, state["history"], train_config.average_best, "student.")
        if final is not None:
            student.load_state_dict(final)
        if train_config.average_best > 1:
            predicted = predict(student, valid_loader, features, device)
            averaged, _ = accuracy_and_loss(predicted.logits, predicted.targets)
            command = slot_heads.command_acceptance(predicted)  # the score selection reads, as per epoch
            metrics["valid_accuracy_averaged"] = averaged if command is None else command
        extra = {"ctc_characters": CHARACTERS if student.has_ctc else None, "training": config.to_dict(),
                 "trim_silence": data.trim_silence}  # fmt: skip
        save_model_dir(output_dir, student.cpu(), data.frontend, data.labels, extra, metrics)
        mark_done(output_dir, fingerprint)
        logger.info(
            "%s: best valid accuracy %.4f at epoch %d",
            output_dir,
            state["best_accuracy"],
            state["best_epoch"],
        )
    distributed.barrier()
    return metrics


def evaluate_on_store(model_dir: str | os.PathLike, manifest_path: str | os.PathLike, store_dir: str | os.PathLike,
                      device: str = "auto", max_frames: int = 40000) -> dict:  # fmt: skip
    """Accuracy of a student model dir on a split's feature store, normalised with the model's statistics."""
    device = resolve_device(device)
    loaded = load_model_dir(model_dir, device)
    manifest = read_manifest(manifest_path, loaded.labels)
    store = FeatureStore(store_dir)
    store.check_compatible(loaded.frontend, manifest_path)
    dataset = UtteranceDataset(manifest, loaded.labels, store)
    sampler = LengthBucketSampler([dataset.frames(i) for i in range(len(dataset))], max_frames, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    features = TrainingFeatures(loaded.frontend, AugmentConfig(), device)
    predicted = predict(loaded.model, loader, features, device)
    accuracy, loss = accuracy_and_loss(predicted.logits, predicted.targets)
    return {"accuracy": accuracy, "loss": loss, "utterances": len(predicted.targets),
            "command_acceptance": slot_heads.command_acceptance(predicted)}  # fmt: skip
