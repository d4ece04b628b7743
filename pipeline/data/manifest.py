"""The manifest: JSON Lines, one utterance a line, the contract between data preparation and
every later stage.

Fields: ``id``, ``audio`` (relative to the manifest's folder, or absolute), ``duration``
(seconds), ``sample_rate``, ``transcript``, ``intent``, ``slots`` (dict, may be empty),
``speaker``. A line without ``transcript`` (absent or null) is an audio-only utterance, valid for
evaluating speech models; whatever needs the text (the teacher) checks with
:func:`require_transcripts`. Unknown extra fields are kept through a read/write round trip. A manifest is
validated when it is read and before it is written; a bad line is reported with its file and
line number.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_open
from pipeline.data.labels import LABELS_FILENAME, LabelError, LabelSet

MANIFEST_SUFFIX = ".jsonl"
REQUIRED_FIELDS = ("id", "audio", "duration", "sample_rate", "intent")


class ManifestError(SlukdError, ValueError):
    """A manifest line (or a whole manifest) that breaks the contract."""


@dataclass
class Utterance:
    """One line of a manifest."""

    id: str
    audio: str
    duration: float
    sample_rate: int
    transcript: str  # "" for an audio-only utterance (no transcript)
    intent: str
    slots: dict[str, str] = field(default_factory=dict)
    speaker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`ManifestError` with the first problem found."""
        for name in ("id", "audio", "intent"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ManifestError(f"field {name!r} must be a non-empty string, got {value!r}")
        if not isinstance(self.transcript, str) or (self.transcript and not self.transcript.strip()):
            raise ManifestError(
                f"utterance {self.id!r}: empty transcript (leave the field out for an audio-only line)"
            )
        if (
            isinstance(self.duration, bool)
            or not isinstance(self.duration, (int, float))
            or not math.isfinite(self.duration)
            or self.duration <= 0
        ):
            raise ManifestError(f"utterance {self.id!r}: duration must be > 0 s, got {self.duration!r}")
        if (
            isinstance(self.sample_rate, bool)
            or not isinstance(self.sample_rate, int)
            or self.sample_rate <= 0
        ):
            raise ManifestError(
                f"utterance {self.id!r}: sample_rate must be a positive integer, got {self.sample_rate!r}"
            )
        if not isinstance(self.slots, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.slots.items()
        ):
            raise ManifestError(f"utterance {self.id!r}: slots must map strings to strings")
        if not isinstance(self.speaker, str):
            raise ManifestError(f"utterance {self.id!r}: speaker must be a string")

    def to_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "audio": self.audio,
            "duration": round(float(self.duration), 4),
            "sample_rate": self.sample_rate,
            "transcript": self.transcript,
            "intent": self.intent,
            "slots": dict(self.slots),
            "speaker": self.speaker,
        }
        if not self.transcript:
            del data["transcript"]  # an audio-only line
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @property
    def has_transcript(self) -> bool:
        return bool(self.transcript)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Utterance:
        if not isinstance(data, dict):
            raise ManifestError(f"expected a JSON object, got {type(data).__name__}")
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise ManifestError(f"missing field(s): {', '.join(missing)}")
        known = set(REQUIRED_FIELDS) | {"transcript", "slots", "speaker"}
        utterance = cls(
            id=data["id"],
            audio=data["audio"],
            duration=data["duration"],
            sample_rate=data["sample_rate"],
            transcript="" if data.get("transcript") is None else data["transcript"],
            intent=data["intent"],
            slots=data.get("slots") or {},
            speaker=data.get("speaker", "") if data.get("speaker") is not None else "",
            extra={k: v for k, v in data.items() if k not in known},
        )
        utterance.validate()
        return utterance


@dataclass
class Manifest:
    """The utterances of one split, and the file they came from (for resolving audio paths)."""

    utterances: list[Utterance]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]

    @property
    def root(self) -> Path:
        """The folder relative audio paths are resolved against."""
        return self.path.parent if self.path is not None else Path.cwd()

    def audio_path(self, utterance: Utterance) -> Path:
        """Absolute path of an utterance's audio."""
        audio = Path(utterance.audio)
        return audio if audio.is_absolute() else (self.root / audio)

    @property
    def total_duration(self) -> float:
        return sum(u.duration for u in self.utterances)

    def validate(self, labels: LabelSet | None = None) -> None:
        """Check ids are unique and, with ``labels``, that every intent and slot is known."""
        where = f"{self.path}: " if self.path else ""
        duplicates = [i for i, n in Counter(u.id for u in self.utterances).items() if n > 1]
        if duplicates:
            shown = ", ".join(repr(d) for d in duplicates[:5])
            raise ManifestError(f"{where}duplicate utterance id(s): {shown}")
        if labels is not None:
            for line, utterance in enumerate(self.utterances, start=1):
                try:
                    labels.index(utterance.intent)
                    if labels.slots:
                        labels.check_slots(utterance.slots)
                except LabelError as error:
                    raise ManifestError(f"{where}line {line}: {error}") from None

    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Validate, then write atomically (a temporary file renamed into place)."""
        return write_manifest(path or self.path, self.utterances)


def read_manifest(path: str | os.PathLike, labels: LabelSet | None = None) -> Manifest:
    """Read and validate a JSON Lines manifest.

    Raises:
        ManifestError: ``"<file>:<line>: <problem>"`` for the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    utterances = []
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                utterances.append(Utterance.from_dict(json.loads(line)))
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            except ManifestError as error:
                raise ManifestError(f"{path}:{line_number}: {error}") from None
    if not utterances:
        raise ManifestError(f"{path}: manifest is empty")
    manifest = Manifest(utterances, path)
    manifest.validate(labels)
    return manifest


def require_transcripts(manifest: Manifest, purpose: str = "the teacher") -> None:
    """Raise :class:`ManifestError` naming the file and the first utterance without a transcript."""
    for line, utterance in enumerate(manifest.utterances, start=1):
        if not utterance.has_transcript:
            raise ManifestError(
                f"{manifest.path or 'manifest'}: line {line}: utterance {utterance.id!r} has no transcript, "
                f"which {purpose} needs (audio-only lines serve the evaluation of speech models only)"
            )


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> Path:
    """Validate every utterance, then write the manifest atomically."""
    path = Path(path)
    utterances = list(utterances)
    for line_number, utterance in enumerate(utterances, start=1):
        try:
            utterance.validate()
        except ManifestError as error:
            raise ManifestError(f"{path}:{line_number}: {error}") from None
    Manifest(utterances, path).validate()
    with atomic_open(path) as stream:
        for utterance in utterances:
            stream.write(json.dumps(utterance.to_dict(), ensure_ascii=False) + "\n")
    return path


SPLIT_ORDER = ("train", "valid", "test")  # listed first, in this order; other splits follow by name


def find_manifests(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The ``<split>.jsonl`` manifests of a data folder (``DIR/manifests/`` or ``DIR`` itself).

    Returns:
        split -> path: train, valid, test first, then the other splits by name.

    Raises:
        ManifestError: no such folder, or no manifests in it.
    """
    data_dir = Path(data_dir)
    folder = data_dir / "manifests" if (data_dir / "manifests").is_dir() else data_dir
    if not folder.is_dir():
        raise ManifestError(f"{data_dir}: data folder not found")
    found = {path.name[: -len(MANIFEST_SUFFIX)]: path for path in sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))}
    if not found:
        raise ManifestError(f"{folder}: no *{MANIFEST_SUFFIX} manifests here")

    def rank(split: str) -> tuple[int, str]:
        return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)

    return {split: found[split] for split in sorted(found, key=rank)}


def manifest_paths(
    manifests: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike],
) -> dict[str, Path]:
    """split -> path from a mapping, or from a list of manifests (split: the file name without ``.jsonl``)."""
    if isinstance(manifests, Mapping):
        return {str(split): Path(path) for split, path in manifests.items()}
    paths = [Path(path) for path in manifests]
    return {path.name.removesuffix(MANIFEST_SUFFIX): path for path in paths}


def write_split_manifests(splits: dict[str, list[Utterance]], folder: str | os.PathLike,
                          labels: LabelSet) -> dict[str, Manifest]:  # fmt: skip
    """Each split's utterances checked against ``labels`` and written as ``folder/<split>.jsonl``,
    then ``folder/labels.json`` (what a generated corpus writes last)."""
    folder = Path(folder)
    manifests = {}
    for split, utterances in splits.items():
        manifest = Manifest(utterances, folder / f"{split}.jsonl")
        manifest.validate(labels)
        manifest.write()
        manifests[split] = manifest
    labels.save(folder / LABELS_FILENAME)
    return manifests
