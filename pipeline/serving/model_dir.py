"""The student model dir: the only code that reads or writes one.

A model dir needs nothing else to run (no teacher, no corpus, no training code, no pickle)::

    config.json         {"format": "slukd-student", "version": 2, "family": "transformer",
                         "student": {...}, "frontend": {"name": "fbank", ..., "cmvn": {...}},
                         "labels": {...}, "ctc_characters": "..." | null, "training": {...},
                         "slot_classes": {slot: [classes of its head]}}  (only with slot heads)
    model.safetensors   every weight (a pretrained encoder's too)
    labels.json         the label map (for people and tools; config.json is what is read)
    metrics.json        what training measured (optional)

Version-1 dirs (``features`` + ``cmvn`` instead of ``frontend``, no ``family``) still load, as
the ``transformer`` family with the fbank front-end.

    loaded = load_model_dir("exp/run/student", device="cpu")
    features, frames = loaded.frontend(waveforms, lengths)
    logits = loaded.model(features, frames).logits
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from pipeline.core.errors import SlukdError
from pipeline.core.io import write_json
from pipeline.data.labels import LabelError, LabelSet
from pipeline.frontends.base import FrontEnd, FrontEndError, build_frontend
from pipeline.students.registry import DEFAULT_FAMILY, StudentError, build_student, config_dict

MODEL_FORMAT = "slukd-student"
MODEL_VERSION = 2
CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, METRICS_FILE = (
    "config.json",
    "model.safetensors",
    "labels.json",
    "metrics.json",
)

# An exported graph (pipeline.serving.export) carries what a runtime needs in its ONNX metadata_props.
ONNX_FORMAT = "slukd-student-onnx"
ONNX_FORMAT_VERSION = 2  # 2: "family" and "frontend" instead of "features"
ONNX_METADATA_KEYS = {
    "slukd_format": f"always {ONNX_FORMAT!r}",
    "slukd_format_version": "integer, bumped when inputs/outputs/metadata change meaning",
    "sample_rate": "integer, the rate the waveform input must have",
    "labels": "JSON label map {intents: [...], slots: {...}}",
    "family": "the student family (transformer, whisper, hf)",
    "frontend": "JSON front-end config the in-graph front-end implements (statistics not repeated)",
    "student": "JSON config of the exported student",
    "ctc_characters": "CTC vocabulary after the blank (id 0); empty: no CTC outputs",
    "quantization": "'none' or 'int8-dynamic'",
    "max_seconds": "the longest input the model takes, in seconds (Whisper: 30); empty: no limit of its own",
    "source_model": "the student model dir it was exported from",
    "slukd_rejection": "JSON rejection section of config.json (pipeline.serving.rejection); empty: no rejection",
    "trim_silence": "'true' when the model was trained on trimmed audio (inference trims the same way)",
    "slot_heads": "JSON [{name, classes, output}] per slot head, in output order; empty or absent: none",
}


class ModelDirError(SlukdError):
    """A student model dir that is missing, incomplete, of another format or inconsistent."""


@dataclass
class LoadedStudent:
    """A student model dir in memory."""

    model: nn.Module  # the student, in eval mode, on the requested device
    frontend: FrontEnd  # waveforms -> normalised features, with the model's statistics
    labels: LabelSet
    config: dict[str, Any]  # config.json, upgraded to the current version
    path: Path

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def slot_classes(self) -> dict[str, list[str]]:
        """Slot -> the classes of its head, in the model's head order (``{}`` without slot heads)."""
        return model_slot_classes(self.model, self.labels)

    @property
    def ctc_characters(self) -> str | None:
        """The CTC vocabulary after the blank, when the student has a CTC head."""
        return (self.config.get("ctc_characters") or None) if self.model.has_ctc else None


def is_student_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a config.json of the student format (nothing else is checked)."""
    try:
        config = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == MODEL_FORMAT


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of a student model dir, checked and upgraded to version 2.

    Raises:
        ModelDirError: no dir, no config.json, invalid JSON, another format, a newer version,
        a missing entry.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelDirError(f"{folder}: model dir not found")
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise ModelDirError(f"{folder}: not a student model dir ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelDirError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelDirError(f"{file}: format {found!r} is not {MODEL_FORMAT!r}")
    version = config.get("version")
    if not isinstance(version, int) or not 1 <= version <= MODEL_VERSION:
        raise ModelDirError(
            f"{file}: model version {version!r} is newer than this slukd reads (up to {MODEL_VERSION}); upgrade slukd"
        )
    if version == 1:
        config = _upgrade_v1(config, file)
    for key in ("family", "student", "frontend", "labels"):
        if key not in config:
            raise ModelDirError(f"{file}: no {key!r} entry")
    return config


def _upgrade_v1(config: dict[str, Any], file: Path) -> dict[str, Any]:
    """A version-1 config (fbank ``features`` + ``cmvn``, transformer student) as version 2."""
    for key in ("student", "features", "cmvn", "labels"):
        if key not in config:
            raise ModelDirError(f"{file}: no {key!r} entry (written by an older slukd?)")
    upgraded = {key: value for key, value in config.items() if key not in ("features", "cmvn")}
    cmvn = config["cmvn"]
    frontend = {
        "name": "fbank",
        **config["features"],
        "cmvn": {"mean": cmvn.get("mean"), "std": cmvn.get("std")},
    }
    return {**upgraded, "version": MODEL_VERSION, "family": DEFAULT_FAMILY, "frontend": frontend}


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedStudent:
    """Load a student model dir: its model (eval mode, on ``device``), front-end and labels.

    Raises:
        ModelDirError: one line naming the file and what is wrong (missing files, invalid
        JSON, an unknown format, version, family or front-end, weights that do not fit).
    """
    folder = Path(path)
    config = read_config(folder)
    file = folder / CONFIG_FILE
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirError(f"{folder}: not a student model dir ({WEIGHTS_FILE} is missing)")
    try:
        frontend = build_frontend(config["frontend"])
        labels = LabelSet.from_dict(config["labels"])
        model = build_student(config["family"], config["student"])
    except (FrontEndError, StudentError, LabelError, ValueError, KeyError, TypeError) as error:
        raise ModelDirError(f"{file}: {error}") from None
    if frontend.missing_statistics():
        raise ModelDirError(f"{file}: the {frontend.name} front-end has no statistics")
    try:
        load_model(model, str(weights), strict=True)
    except RuntimeError as error:  # missing/unexpected keys, shape mismatches
        lines = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:2])[:300]
        raise ModelDirError(f"{weights}: weights do not fit config.json ({detail})") from None
    except Exception as error:  # safetensors' own errors for a corrupt file
        raise ModelDirError(f"{weights}: cannot read weights ({error})") from None
    num_intents = getattr(model.config, "num_intents", len(labels))
    if num_intents != len(labels):
        raise ModelDirError(f"{file}: student has {num_intents} intents but the labels list {len(labels)}")
    heads = getattr(model.config, "slot_classes", {})
    wrong = [
        name
        for name, count in heads.items()
        if name not in labels.slots or len(labels.slot_classes(name)) != count
    ]
    if wrong:
        raise ModelDirError(f"{file}: slot head(s) {', '.join(wrong)} do not fit the slots of the labels")
    return LoadedStudent(model.to(torch.device(device)).eval(), frontend, labels, config, folder)


def save_model_dir(path: str | os.PathLike, model: nn.Module, frontend: FrontEnd, labels: LabelSet,
                   extra: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write a self-contained student model dir into ``path`` (created if needed).

    Every file is written under a temporary name and renamed; config.json goes last, so a
    folder is only a model dir once it is complete.

    Args:
        path: the folder (a training run writes into its own run folder).
        model: the student (its ``family`` and ``config`` are recorded).
        frontend: with the statistics the model was trained with.
        labels: the label map.
        extra: more config.json entries (``ctc_characters``, ``training``).
        metrics: written to metrics.json when given.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if frontend.missing_statistics():
        raise ModelDirError(f"{folder}: the {frontend.name} front-end has no statistics to save")
    handle, temporary = tempfile.mkstemp(prefix=f".{WEIGHTS_FILE}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        save_model(model, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, folder / WEIGHTS_FILE)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    labels.save(folder / LABELS_FILE)
    if metrics is not None:
        write_json(folder / METRICS_FILE, metrics)
    config = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "family": model.family,
        "student": config_dict(model),
        "frontend": frontend.to_config(),
        "labels": labels.to_dict(),
        "ctc_characters": None,
        **({"slot_classes": model_slot_classes(model, labels)} if getattr(model, "slot_names", None) else {}),
        **(extra or {}),
    }
    write_json(folder / CONFIG_FILE, config)


def update_config(path: str | os.PathLike, entries: dict[str, Any]) -> None:
    """Set top-level entries of a student model dir's config.json (e.g. its ``rejection`` section),
    rewriting the file atomically as it is on disk (an old version stays that version).

    Raises:
        ModelDirError: not a student model dir (as :func:`read_config`).
    """
    folder = Path(path)
    read_config(folder)  # a dir this slukd reads, or a one-line error
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config.update(entries)
    write_json(folder / CONFIG_FILE, config)


def model_slot_classes(model: nn.Module, labels: LabelSet) -> dict[str, list[str]]:
    """Slot -> the classes of the student's head for it (:meth:`LabelSet.slot_classes`), head order."""
    return {name: labels.slot_classes(name) for name in getattr(model, "slot_names", [])}
