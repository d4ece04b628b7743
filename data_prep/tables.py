"""Reading a corpus's metadata files: CSV/TSV tables, audio paths, split files."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from data_prep.rows import TRAIN_SPLIT, DataPrepError, check_split_name, quoted_names


@dataclass
class TableRow:
    """One data row of a CSV/TSV file: values by column name, and its line number."""

    line: int
    values: dict[str, str]
    problem: str = ""


@dataclass
class Table:
    """A CSV/TSV file read whole: its path, header and rows."""

    path: Path
    columns: list[str]
    rows: list[TableRow]


def sniff_delimiter(path: Path, header: str) -> str:
    """The delimiter of a table: tab for ``.tsv``/``.tab``, comma for ``.csv``, else the header's."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    counts = {delimiter: header.count(delimiter) for delimiter in (",", "\t", ";", "|")}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def read_table(path: Path, delimiter: str | None = None) -> Table:
    """Read a CSV/TSV file with a header line (UTF-8, an optional byte-order mark).

    Blank lines are ignored; a row with the wrong number of fields is kept with its
    ``problem`` set, so that it can be reported (or skipped) with its line number.

    Raises:
        DataPrepError: the file is missing, not UTF-8 text, empty, or has a bad header.
    """
    if not path.is_file():
        raise DataPrepError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            header = stream.readline()
            stream.seek(0)
            reader = csv.reader(stream, delimiter=delimiter or sniff_delimiter(path, header))
            columns = [name.strip() for name in next(reader, [])]
            if not any(columns):
                raise DataPrepError(f"{path}: empty file (no header line)")
            repeated = sorted(name for name, count in Counter(columns).items() if count > 1 and name)
            if repeated:
                raise DataPrepError(f"{path}: column(s) named twice in the header: {quoted_names(repeated)}")
            rows = []
            for fields in reader:
                if not any(value.strip() for value in fields):
                    continue
                row = TableRow(reader.line_num, dict(zip(columns, fields, strict=False)))
                if len(fields) != len(columns):
                    row.problem = f"row has {len(fields)} field(s), the header has {len(columns)}"
                rows.append(row)
    except UnicodeDecodeError as error:
        raise DataPrepError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise DataPrepError(f"{path}: cannot parse as CSV ({error})") from None
    return Table(path, columns, rows)


def check_columns(table: Table, required: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """Raise :class:`DataPrepError` naming the file and the missing column(s).

    Returns:
        The header's columns that are neither required nor allowed (unnamed ones excluded).
    """
    required = list(required)
    known = set(required) | set(allowed)
    missing = [name for name in required if name not in table.columns]
    unknown = [name for name in table.columns if name and name not in known]
    if missing:
        found = f"; unexpected: {quoted_names(unknown)}" if unknown else ""
        raise DataPrepError(f"{table.path}: missing column(s) {quoted_names(missing)}{found}")
    return unknown


def resolve_audio(base_dir: Path, text: str) -> Path | None:
    """The audio path a metadata file gives, relative to ``base_dir`` unless absolute."""
    text = text.strip()
    if not text:
        return None
    return base_dir / Path(text).expanduser()


def parse_split_files(text: str) -> dict[str, str]:
    """Parse ``"train=a.csv,valid=b.csv"`` into ``{"train": "a.csv", "valid": "b.csv"}``."""
    split_files: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, separator, path = item.partition("=")
        if not separator or not name.strip() or not path.strip():
            raise DataPrepError(f"expected NAME=PATH, got {item!r}")
        name = check_split_name(name.strip())
        if name in split_files:
            raise DataPrepError(f"split {name!r} given twice")
        split_files[name] = path.strip()
    if not split_files:
        raise DataPrepError("no split files given")
    return split_files


def resolve_split_files(base_dir: Path, split_files: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """Split name -> metadata file, relative paths taken from ``base_dir``; each must exist."""
    resolved = {}
    for name, path in split_files.items():
        path = base_dir / Path(path).expanduser()
        if not path.is_file():
            raise DataPrepError(f"{path}: {check_split_name(name)} split file not found")
        resolved[name] = path
    if TRAIN_SPLIT not in resolved:
        raise DataPrepError(
            f"no {TRAIN_SPLIT!r} split among {quoted_names(resolved)}: labels.json is built from it"
        )
    return resolved
