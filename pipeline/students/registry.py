"""The student registry: family name -> model class (and its config dataclass).

A student family is an ``nn.Module`` with the interface in ``/work/notes/CONTRACTS.md``:
``family``, ``config_class``, ``config``, ``forward(features, lengths, return_layers)``,
``output_lengths``, ``num_layers``, ``hidden_size``, ``default_frontend()``,
``parameter_groups(lr, pretrained_lr, layer_decay)``, ``has_ctc``. Its config dataclass has at
least ``num_intents``, ``teacher_dim`` and ``ctc_vocab_size`` (training fills them in).

Families register themselves with :func:`register_student` in their own module; the modules of
the known families are imported here lazily, by name, when a family is first asked for, so a
family whose optional dependencies are missing costs the others nothing.

    student = build_student("transformer", {"d_model": 256, "num_intents": 31})
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.errors import SlukdError
from pipeline.core.registry import lookup

DEFAULT_FAMILY = "transformer"
# family -> the module that registers it (imported on first use)
FAMILY_MODULES = {
    "transformer": "pipeline.students.transformer",
    "whisper": "pipeline.students.whisper",
    "hf": "pipeline.students.hf",
}
STUDENTS: dict[str, type[nn.Module]] = {}


class StudentError(SlukdError):
    """An unknown student family, or a config that does not fit it."""


def register_student(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator (or call): make ``cls`` buildable by its ``family`` name."""
    STUDENTS[cls.family] = cls
    return cls


def student_class(family: str) -> type[nn.Module]:
    """The model class of a family (importing its module on first use).

    Raises:
        StudentError: an unknown family, or its module cannot be imported (a missing package).
    """
    return lookup("student family", family, STUDENTS, FAMILY_MODULES, StudentError)


def config_class(family: str) -> type:
    """The config dataclass of a family."""
    return student_class(family).config_class


def student_config(family: str, values: dict[str, Any]) -> Any:
    """A family's config from a dict (unknown keys and bad values are one-line errors)."""
    try:
        return from_dict(config_class(family), values)
    except (ConfigError, ValueError, TypeError) as error:
        raise StudentError(f"student ({family}): {error}") from None


def build_student(family: str, config: dict[str, Any] | Any) -> nn.Module:
    """A freshly initialised student of ``family`` from its config (a dict or the dataclass)."""
    cls = student_class(family)
    if not dataclasses.is_dataclass(config):
        config = student_config(family, config)
    try:
        return cls(config)
    except ValueError as error:
        raise StudentError(f"student ({family}): {error}") from None


def new_student(family: str, config: dict[str, Any] | Any) -> nn.Module:
    """A student to train: a family with pretrained weights loads them (its ``from_pretrained``,
    which replaces any encoder shape in ``config`` by the pretrained one); the rest is freshly
    initialised. :func:`build_student` instead rebuilds a student from a saved config alone."""
    cls = student_class(family)
    if not dataclasses.is_dataclass(config):
        config = student_config(family, config)
    factory = getattr(cls, "from_pretrained", cls)
    try:
        return factory(config)
    except ValueError as error:
        raise StudentError(f"student ({family}): {error}") from None


def config_dict(model: nn.Module) -> dict[str, Any]:
    """The JSON-able config of a built student (what ``build_student`` takes back)."""
    return to_dict(model.config)


def min_input_length(model: nn.Module) -> int:
    """The input length a family pads shorter inputs to (``min_input_length`` if it declares one, else 1)."""
    return int(getattr(model, "min_input_length", 1))


def num_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
