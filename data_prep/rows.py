"""The rows a corpus preparer reads, the errors it raises, and the names it writes.

A preparer (``data_prep.fsc``, ``data_prep.slurp``, ``data_prep.csv_manifest``) reads its
corpus's metadata into :class:`SourceRow` s; :mod:`data_prep.checks` turns them into
:class:`CheckedUtterance` s or :class:`SkippedRow` s, and :mod:`data_prep.prepare` writes the
manifests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import SlukdError
from pipeline.data.manifest import Utterance

MANIFEST_DIRNAME = "manifests"
SKIPPED_FILENAME = "skipped.txt"
TRAIN_SPLIT = "train"
UNASSIGNED = ""  # the "split" of rows whose split is unknown; each must carry a problem
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DataPrepError(SlukdError, ValueError):
    """A corpus that cannot be prepared; the message is one line naming the file (and line)."""


@dataclass
class SourceRow:
    """One utterance as a corpus's metadata describes it, before its audio is read.

    ``problem`` is set by a reader that could not make sense of the row (bad JSON, a wrong
    number of fields); such a row is reported or skipped like any other invalid one.
    """

    source: Path
    line: int
    id: str = ""
    audio: Path | None = None
    transcript: str = ""
    intent: str = ""
    slots: dict[str, str] = field(default_factory=dict)
    speaker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str = ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class SkippedRow:
    """A row left out of the manifests, and why."""

    split: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem} [{self.split or 'no split'}]"


@dataclass(frozen=True)
class CheckedUtterance:
    """A row that passed every check, and the manifest line made from it."""

    row: SourceRow
    utterance: Utterance


def check_split_name(name: str) -> str:
    """A split name usable as a file name (``train``, ``valid``, ``test_speaker``, ...)."""
    if not SPLIT_NAME.match(name) or name in ("labels", "skipped"):
        raise DataPrepError(
            f"invalid split name {name!r}: use letters, digits, '_', '-' or '.' (not 'labels' or 'skipped')"
        )
    return name


def split_order(split: str) -> tuple[int, str]:
    """Sort key of split names: train, valid, test, then the others by name."""
    order = {"train": 0, "valid": 1, "test": 2}
    return order.get(split, 3), split


def quoted_names(names: Iterable[str]) -> str:
    """``'a', 'b'``: names for a message."""
    return ", ".join(repr(name) for name in names)


def one_line(error: BaseException) -> str:
    """An error's message on one line (its type's name when it has none)."""
    return re.sub(r"\s*\n\s*", " ", str(error).strip()) or type(error).__name__
