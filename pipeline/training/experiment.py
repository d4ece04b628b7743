"""The settings of one student run: ``train``, ``student`` (with its ``family``), ``distill`` and
``augment`` sections of a YAML file, with ``section.key=value`` overrides.

    config = load_experiment_config("recipes/synthetic/conf/student.yaml", ["train.epochs=5"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.augment.augmentation import AugmentConfig
from pipeline.core.config import ConfigError, load_config, parse_overrides, read_section, to_dict
from pipeline.students.registry import DEFAULT_FAMILY, StudentError, config_class, student_config
from pipeline.training.losses import DistillConfig


@dataclass
class TrainConfig:
    """Optimisation and data settings (the architecture is the student family's config)."""

    epochs: int = 30
    max_frames: int = 20000  # padded input frames per batch (per rank)
    learning_rate: float = 1e-3  # of everything trained from scratch
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    # Pretrained parts of a family (whisper, hf); the transformer family has none.
    pretrained_lr: float = 1e-4  # learning rate of the top pretrained layer
    layer_decay: float = 1.0  # factor per pretrained layer below the top
    pretrained_freeze_steps: int = 0  # pretrained groups stay at lr 0 for this many steps
    pretrained_warmup_steps: int = 0  # then ramp up over this many (on top of the schedule)
    seed: int = 0
    device: str = "auto"
    patience: int = 8  # stop after this many epochs without a better valid accuracy; 0: never
    average_best: int = 0  # average the weights of this many best epochs at the end; 0: keep the best
    train_fraction: float = 1.0  # train on a seeded subset of the training utterances
    on_the_fly: bool = False  # compute features from waveforms (needed for speed/noise augmentation)
    num_workers: int = 0  # DataLoader processes
    # Store a frozen encoder's outputs once per split and train the rest on them (pipeline.training.encoder_cache):
    # auto: when the student has a frozen part and no augmentation is on (or only waveform
    # augmentation, with cache_augmented_copies > 0); true: always (an error
    # when it cannot); false: never.
    cache_frozen: bool | str = "auto"
    # With waveform augmentation on, also cache this many augmented copies of the train split
    # (seeded per copy and utterance); each epoch reads one version of each utterance. 0: no
    # copies, and waveform augmentation runs on the fly without a cache (pipeline.training.encoder_cache).
    cache_augmented_copies: int = 0

    def __post_init__(self) -> None:
        if self.cache_frozen not in (True, False, "auto"):
            raise ValueError(f"cache_frozen must be auto, true or false, got {self.cache_frozen!r}")
        copies = self.cache_augmented_copies
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise ValueError(
                f"cache_augmented_copies must be an integer >= 0, got {self.cache_augmented_copies!r}"
            )


def default_student_config() -> Any:
    return config_class(DEFAULT_FAMILY)()


@dataclass
class ExperimentConfig:
    """Everything one student run depends on, written beside its outputs."""

    train: TrainConfig = field(default_factory=TrainConfig)
    student: Any = field(default_factory=default_student_config)  # the family's config dataclass
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    family: str = DEFAULT_FAMILY  # the student family (``student.family`` in a config file)

    def to_dict(self) -> dict:
        return {
            "train": to_dict(self.train),
            "student": {"family": self.family, **to_dict(self.student)},
            "distill": to_dict(self.distill),
            "augment": self.augment.to_dict(),
        }


SECTIONS = ("train", "student", "distill", "augment")


def load_experiment_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Sections ``train``, ``student``, ``distill``, ``augment`` of a YAML file; overrides as
    ``section.key=value`` (``distill.logits=1.0``). ``student.family`` picks the student family
    (default ``transformer``); the rest of ``student`` is that family's config."""
    grouped: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for override in overrides or []:
        key = override.split("=", 1)[0]
        section, dot, _ = key.partition(".")
        if not dot or section not in SECTIONS:
            raise ConfigError(
                f"override {override!r} must be SECTION.KEY=VALUE with SECTION in {', '.join(SECTIONS)}"
            )
        grouped[section].append(override.split(".", 1)[1])
    augment_values = {**read_section(path, "augment", SECTIONS), **parse_overrides(grouped["augment"])}
    try:
        augment = AugmentConfig.from_dict(augment_values)  # validates itself, knows its tuple fields
    except (TypeError, ValueError) as error:
        raise ConfigError(f"augment: {error}") from None
    student_values = {**read_section(path, "student", SECTIONS), **parse_overrides(grouped["student"])}
    family = str(student_values.pop("family", DEFAULT_FAMILY))
    try:
        student = student_config(family, student_values)
    except StudentError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None
    return ExperimentConfig(
        train=load_config(TrainConfig, path, grouped["train"], section="train", siblings=SECTIONS),
        student=student,
        distill=load_config(DistillConfig, path, grouped["distill"], section="distill", siblings=SECTIONS),
        augment=augment,
        family=family,
    )
