"""What a training run reads: manifests, feature stores, the front-end, and batches as features.

- :func:`read_manifests`: labels and the train/valid manifests (a seeded subset with
  ``train_fraction``);
- :func:`prepare_data`: the student family's front-end with the feature store's settings and
  the *train* store's statistics, and the datasets (stored raw features, or waveforms when the
  store holds another front-end's features, when waveform augmentation is on, or when there is
  no store and the front-end needs no statistics, as Whisper's log-mel and the hf waveforms);
- :class:`TrainingFeatures`: a batch -> normalised (and, when training, augmented) features;
- :func:`with_frozen_cache`: for a student with a frozen bottom and no augmentation, the datasets
  swapped for stores of the frozen bottom's outputs (:mod:`pipeline.training.encoder_cache`), which
  :class:`FrozenInputs` hands to ``student.forward_from_frozen``. With
  ``train.cache_augmented_copies: N`` and waveform augmentation on, the train split also gets N
  augmented copies, and each epoch reads one version per utterance (:class:`AugmentedCopies`);
  feature augmentation (SpecAugment, VTLP) still means no cache.

Training, validation and the saved model normalise with the same statistics, so checkpoint
selection sees what inference will.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.augment.augmentation import AugmentConfig, Augmenter
from pipeline.core import distributed
from pipeline.core.config import ConfigError
from pipeline.core.io import is_done
from pipeline.data.batching import Batch, DataError, UtteranceDataset, WaveformDataset
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.data.vad import TRIM_SILENCE_DEFAULT
from pipeline.frontends.base import FbankFrontEnd, FrontEnd, build_frontend
from pipeline.frontends.feature_store import FeatureStore
from pipeline.training.encoder_cache import (
    AugmentedCopies,
    CopyAugmentation,
    FrozenStates,
    augmented_folder,
    build_frozen_states,
    cache_fingerprint,
    cache_folder,
    cache_identity,
    copy_fingerprint,
    frozen_weights_sha256,
    has_frozen_part,
)
from pipeline.training.experiment import ExperimentConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """Where a run reads from: manifests, feature stores, teacher targets."""

    train_manifest: Path
    valid_manifest: Path
    train_features: Path
    valid_features: Path
    teacher_targets: Path | None = None
    frozen_cache: Path | None = None  # where frozen encoder outputs are cached; None: beside train_features


@dataclass
class TrainData:
    """What a run trains and validates on."""

    labels: LabelSet
    train: UtteranceDataset
    valid: UtteranceDataset
    frontend: FrontEnd  # with the train split's statistics
    train_lengths: list[int]  # per utterance, what batches are capped by (input frames, 10 ms on the fly)
    valid_lengths: list[int]  # (kept when the datasets hold frozen states, so the batches stay the same)
    frozen: bool = False  # the datasets hold the student's frozen encoder states (with_frozen_cache)
    trim_silence: bool = False  # leading/trailing non-speech cut, as the feature stores were built

    def set_epoch(self, epoch: int) -> None:
        """Tell a train split of augmented copies which epoch it serves (a no-op otherwise)."""
        if isinstance(self.train.store, AugmentedCopies):
            self.train.store.set_epoch(epoch)

    def encoder_frames(self, student: nn.Module) -> Tensor:
        """``[N]`` encoder frames of every training utterance (what a CTC head reads)."""
        if self.frozen:
            return torch.tensor([self.train.frames(i) for i in range(len(self.train))])
        if self.train.store is not None:
            return student.output_lengths(
                torch.tensor([self.train.frames(i) for i in range(len(self.train))])
            )
        rate = self.frontend.sample_rate
        samples = torch.tensor([round(utterance.duration * rate) for utterance in self.train.manifest])
        return student.output_lengths(self.frontend.frame_counts(samples))


class TrainingFeatures:
    """A batch -> the front-end's normalised features on the device, augmented when training.

    Store batches hold raw features: only :meth:`FrontEnd.normalize` runs. Waveform batches go
    through waveform augmentation (training only), then the whole front-end. Training batches
    then get the feature augmentations (VTLP, SpecAugment); a front-end without a frequency axis
    (``waveform``: one value per sample) gets no SpecAugment, since masking "frequency bands" of
    a one-bin feature would erase whole utterances (the hf family masks time itself:
    ``student.spec_augment``).

    Raises:
        ConfigError: VTLP asked for with a front-end other than fbank (it warps the fbank's mel bands).
    """

    def __init__(self, frontend: FrontEnd, augment: AugmentConfig, device: torch.device) -> None:
        if augment.vtlp_prob > 0 and not isinstance(frontend, FbankFrontEnd):
            raise ConfigError(
                f"augment.vtlp_prob={augment.vtlp_prob} needs the fbank front-end (VTLP warps its mel bands); "
                f"this student's front-end is {frontend.name}: set augment.vtlp_prob=0"
            )
        self.frontend = frontend
        fbank = frontend.config if isinstance(frontend, FbankFrontEnd) else None
        self.augmenter = Augmenter(augment, frontend.sample_rate, fbank=fbank)
        self.augment_features = has_frequency_axis(frontend) and (
            augment.spec_augment or augment.vtlp_prob > 0
        )
        if augment.spec_augment and not has_frequency_axis(frontend):
            logger.warning(
                "augment.spec_augment is skipped for the %s front-end (no frequency axis to mask)",
                frontend.name,
            )
        self.device = device

    from_frozen = False  # the student's whole forward runs on these features

    def __call__(self, batch: Batch, generator: torch.Generator | None, train: bool) -> tuple[Tensor, Tensor]:
        if batch.features is not None:
            lengths = batch.feature_lengths.to(self.device)
            features = self.frontend.normalize(batch.features.to(self.device), lengths)
        else:
            waveforms, samples = batch.waveforms.to(self.device), batch.waveform_lengths.to(self.device)
            if train:
                waveforms, samples = self.augmenter(waveforms, samples, generator)
            features, lengths = self.frontend(waveforms, samples)
        if train and self.augment_features:
            features = self.augmenter.augment_features(features, lengths, generator)
        return features, lengths


def has_frequency_axis(frontend: FrontEnd) -> bool:
    """Whether the front-end's features have bins to mask (not the one-value-per-sample waveform)."""
    return frontend.feature_dim > 1


class FrozenInputs:
    """A batch of stored frozen-encoder states -> the states and their encoder frames on the device,
    for ``student.forward_from_frozen`` (augmentation, if any, is in the cached copies)."""

    from_frozen = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, batch: Batch, generator: torch.Generator | None, train: bool) -> tuple[Tensor, Tensor]:
        return batch.features.to(self.device), batch.feature_lengths.to(self.device)


def read_manifests(inputs: TrainInputs, config: ExperimentConfig) -> tuple[LabelSet, Manifest, Manifest]:
    labels_path = inputs.train_manifest.parent / "labels.json"
    labels = LabelSet.load(labels_path)
    train_manifest = read_manifest(inputs.train_manifest, labels)
    valid_manifest = read_manifest(inputs.valid_manifest, labels)
    num_intents = config.student.num_intents
    if num_intents not in (0, len(labels)):
        raise DataError(
            f"the student config has {num_intents} intents but {labels_path} has {len(labels)}; "
            "set student.num_intents to match"
        )
    fraction = config.train.train_fraction
    if not 0 < fraction <= 1:
        raise DataError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction < 1:
        rng = np.random.default_rng(config.train.seed)
        keep = sorted(
            rng.permutation(len(train_manifest))[: max(1, round(fraction * len(train_manifest)))].tolist()
        )
        train_manifest = Manifest([train_manifest[i] for i in keep], train_manifest.path)
    return labels, train_manifest, valid_manifest


def prepare_data(inputs: TrainInputs, config: ExperimentConfig, student: nn.Module, labels: LabelSet,
                  train_manifest: Manifest, valid_manifest: Manifest) -> TrainData:  # fmt: skip
    """The front-end (the family's, with the store's settings and the TRAIN store's statistics)
    and the datasets (store features, or waveforms when the store holds another front-end's, or
    when there is no train store: a front-end without statistics needs none)."""
    wanted = build_frontend(student.default_frontend())
    if not is_done(inputs.train_features) and not wanted.uses_statistics:
        logger.info("%s student: front-end %s on the fly (no feature store in %s, none needed)",
                    config.family, wanted.name, inputs.train_features)  # fmt: skip
        trim = TRIM_SILENCE_DEFAULT  # as a feature store would have been built
        train_set = UtteranceDataset(train_manifest, labels, None, trim)
        valid_set = UtteranceDataset(valid_manifest, labels, None, trim)
        return TrainData(labels, train_set, valid_set, wanted, lengths_of(train_set), lengths_of(valid_set),
                         trim_silence=trim)  # fmt: skip
    train_store, valid_store = FeatureStore(inputs.train_features), FeatureStore(inputs.valid_features)
    stored = train_store.frontend
    valid_store.check_compatible(stored)
    train_store.check_compatible(stored, inputs.train_manifest)
    valid_store.check_compatible(stored, inputs.valid_manifest)
    trim = train_store.trim_silence
    if valid_store.trim_silence != trim:
        raise DataError(f"{inputs.valid_features}: trim_silence {valid_store.trim_silence} differs from the train "
                        f"store's ({trim}); build both with the same setting")  # fmt: skip
    use_stores = stored.name == wanted.name
    if use_stores:
        if stored.feature_dim != wanted.feature_dim:
            raise DataError(
                f"{inputs.train_features}: features have {stored.feature_dim} bins, the {config.family} student "
                f"expects {wanted.feature_dim}; set the student's num_mel_bins or rebuild the features"
            )
        frontend = stored
    else:
        frontend = wanted
        logger.info("%s student: front-end %s, features computed on the fly (the stores hold %s)",
                    config.family, wanted.name, stored.name)  # fmt: skip
    if frontend.uses_statistics:
        if not use_stores:
            raise DataError(
                f"the {frontend.name} front-end needs statistics from a feature store built with it; "
                f"{inputs.train_features} holds {stored.name} features"
            )
        frontend = frontend.with_statistics(train_store.statistics)
    # augmented copies in the frozen cache: the clean split still comes from the store
    on_the_fly = config.train.on_the_fly or (
        config.augment.needs_waveforms and not copies_cached(config, student)
    )
    train_set = UtteranceDataset(
        train_manifest, labels, train_store if use_stores and not on_the_fly else None, trim
    )
    valid_set = UtteranceDataset(valid_manifest, labels, valid_store if use_stores else None, trim)
    return TrainData(labels, train_set, valid_set, frontend, lengths_of(train_set), lengths_of(valid_set),
                     trim_silence=trim)  # fmt: skip


def lengths_of(dataset: UtteranceDataset) -> list[int]:
    return [dataset.frames(i) for i in range(len(dataset))]


def frozen_cache_obstacles(config: ExperimentConfig, student: nn.Module) -> list[str]:
    """Why no frozen-encoder cache can stand in for the student's bottom (empty: it can)."""
    reasons = []
    if not has_frozen_part(student):
        freeze = getattr(student.config, "freeze", None)
        reasons.append(
            f"the {config.family} student has no frozen part" + (f" (freeze: {freeze})" if freeze else "")
        )
    if config.augment.needs_waveforms and config.train.cache_augmented_copies == 0:
        reasons.append(
            "waveform augmentation is on (train.cache_augmented_copies > 0 caches augmented copies)"
        )
    if config.augment.spec_augment or config.augment.vtlp_prob > 0:
        reasons.append("feature augmentation (SpecAugment, VTLP) is on")
    return reasons


def copies_cached(config: ExperimentConfig, student: nn.Module) -> bool:
    """Whether training will read augmented copies from the frozen cache (``train.cache_augmented_copies``)."""
    return (
        config.train.cache_augmented_copies > 0
        and config.train.cache_frozen is not False
        and config.augment.needs_waveforms
        and not frozen_cache_obstacles(config, student)
    )


def frozen_cache_wanted(config: ExperimentConfig, student: nn.Module) -> bool:
    """Whether to train on stored frozen-encoder states (``train.cache_frozen``; see the module docstring).

    Raises:
        ConfigError: ``cache_frozen: true`` where no cache can stand in for the frozen bottom;
            ``cache_augmented_copies > 0`` without any waveform augmentation to make copies with.
    """
    copies = config.train.cache_augmented_copies
    if copies > 0 and not config.augment.needs_waveforms:
        raise ConfigError(
            f"train.cache_augmented_copies={copies}, but no waveform augmentation is on (augment.reverb_prob, "
            "noise_prob, telephone_prob, ...): every copy would equal the clean split; set it to 0"
        )
    setting = config.train.cache_frozen
    reasons = (
        frozen_cache_obstacles(config, student) if setting is not False else ["train.cache_frozen=false"]
    )
    if reasons and setting is True:
        raise ConfigError(f"train.cache_frozen=true, but {'; '.join(reasons)}")
    if reasons and copies > 0:
        logger.warning(
            "train.cache_augmented_copies=%d is unused (%s): augmentation runs on the fly",
            copies,
            "; ".join(reasons),
        )
    return not reasons


def with_frozen_cache(data: TrainData, student: nn.Module, config: ExperimentConfig, inputs: TrainInputs,
                      device: torch.device, rank: int = 0) -> TrainData:  # fmt: skip
    """``data`` with each split's dataset reading the student's frozen-bottom states from a cache,
    built on ``device`` by rank 0 when missing (the student must be on ``device``)."""
    features = TrainingFeatures(data.frontend, AugmentConfig(), device)
    identity = cache_identity(student, data.frontend, frozen_weights_sha256(student))
    root = cache_folder(inputs.frozen_cache or Path(inputs.train_features).parent, identity)
    splits = {"train": (data.train, data.train_lengths), "valid": (data.valid, data.valid_lengths)}
    if rank == 0:
        for split, (dataset, lengths) in splits.items():
            source = (
                f"store {json.dumps(dataset.store.feature_config)}"
                if dataset.store is not None
                else "waveforms"
            ) + (", trimmed" if data.trim_silence else "")
            build_frozen_states(
                student, lambda batch: features(batch, None, train=False), dataset, lengths, root / split,
                cache_fingerprint(identity, dataset, source), config.train.max_frames, config.train.num_workers,
            )  # fmt: skip
        copy_folders = build_augmented_copies(data, student, config, identity, root, device)
    else:
        copy_folders = augmented_copy_folders(config, root)
    distributed.barrier()
    cached = {
        split: UtteranceDataset(dataset.manifest, data.labels, FrozenStates(root / split))
        for split, (dataset, _) in splits.items()
    }
    if copy_folders:
        versions = [cached["train"].store, *(FrozenStates(folder) for folder in copy_folders)]
        cached["train"] = UtteranceDataset(
            data.train.manifest, data.labels, AugmentedCopies(versions, config.train.seed)
        )
        logger.info("%s student: the train split in %d versions (clean + %d augmented copies in %s)",
                    config.family, len(versions), len(copy_folders), copy_folders[0].parent)  # fmt: skip
    logger.info("%s student: training on frozen encoder states from %s", config.family, root)
    return dataclasses.replace(data, train=cached["train"], valid=cached["valid"], frozen=True)


def augmented_copy_folders(config: ExperimentConfig, root: Path) -> list[Path]:
    """The folders of the train split's augmented copies (none without ``cache_augmented_copies``)."""
    if not config.augment.needs_waveforms:
        return []
    folder = augmented_folder(root, config.augment)
    return [folder / f"copy_{copy}" for copy in range(1, config.train.cache_augmented_copies + 1)]


def build_augmented_copies(data: TrainData, student: nn.Module, config: ExperimentConfig, identity: dict,
                           root: Path, device: torch.device) -> list[Path]:  # fmt: skip
    """Build (or reuse) the train split's augmented copies: each utterance through the config's
    waveform augmentation with its own seeded generator, then the front-end and the frozen bottom."""
    folders = augmented_copy_folders(config, root)
    if not folders:
        return []
    waveforms = UtteranceDataset(data.train.manifest, data.labels, None, data.trim_silence)
    augmenter = Augmenter(config.augment, data.frontend.sample_rate)
    base = cache_fingerprint(identity, waveforms, "waveforms" + (", trimmed" if data.trim_silence else ""))
    for copy, folder in enumerate(folders, start=1):
        waves = WaveformDataset(data.train.manifest, trim_silence=data.trim_silence)
        augmentation = CopyAugmentation(augmenter, copy, waves)

        def inputs(
            batch: Batch, augmentation: CopyAugmentation = augmentation
        ) -> tuple[torch.Tensor, torch.Tensor]:
            waves, samples = batch.waveforms.to(device), batch.waveform_lengths.to(device)
            return data.frontend(*augmentation(waves, samples, batch.ids))

        build_frozen_states(
            student, inputs, waveforms, data.train_lengths, folder, copy_fingerprint(base, config.augment, copy),
            config.train.max_frames, config.train.num_workers,
        )  # fmt: skip
    return folders
