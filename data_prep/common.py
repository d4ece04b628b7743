"""What every corpus preparer shares (``data_prep.fsc``, ``data_prep.slurp``, ``data_prep.csv_manifest``).

A preparer only knows its corpus's layout: it reads the metadata files into
:class:`SourceRow` s (one per utterance, grouped by split) and hands them to
:func:`prepare_corpus`, which does the rest the same way for every corpus:

1. skip, if ``<out>/manifests/.done`` holds the same fingerprint (preparer, corpus folder,
   options, size and mtime of every metadata file);
2. check every row: an audio path, an id, a transcript, an intent and slot values that are not
   empty, an id not seen before, and audio whose header reads (on a thread pool, with a
   progress bar), which gives the duration and sample rate;
3. build ``labels.json`` from the train split (intents sorted; slot values where the corpus
   has slots) and check that every other split's labels occur in train;
4. validate every split, then write all manifests and ``labels.json`` into
   ``<out>/manifests/`` at once (built under a temporary name, renamed when complete), and the
   ``.done`` marker last.

A bad row stops the run with a one-line :class:`DataPrepError`, ``"<file>:<line>: <problem>"``,
and nothing is written. With ``skip_invalid`` the bad rows are dropped instead, logged, and
listed in ``<out>/manifests/skipped.txt``.

Audio paths in the manifests are absolute, except for audio inside the output folder, which is
written relative to the manifests' folder so that the output folder can move as a whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.audio import AudioError, AudioInfo, audio_info
from pipeline.io import atomic_directory, atomic_write_text, is_done, mark_done
from pipeline.labels import LABELS_FILENAME, LabelError, LabelSet
from pipeline.logging_utils import setup_logging
from pipeline.manifest import (
    MANIFEST_SUFFIX,
    Manifest,
    ManifestError,
    Utterance,
    read_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

MANIFEST_DIRNAME = "manifests"
SKIPPED_FILENAME = "skipped.txt"
TRAIN_SPLIT = "train"
UNASSIGNED = ""  # the "split" of rows whose split is unknown; each must carry a problem
PREPARER_VERSION = 1  # bump when the manifests that given inputs produce change
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SKIPPED_SHOWN = 20  # skipped rows listed in the log; all of them go to skipped.txt


class DataPrepError(ValueError):
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


# ---------------------------------------------------------------------------------------------
# Reading metadata files


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
                raise DataPrepError(f"{path}: column(s) named twice in the header: {_quoted(repeated)}")
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
        found = f"; unexpected: {_quoted(unknown)}" if unknown else ""
        raise DataPrepError(f"{table.path}: missing column(s) {_quoted(missing)}{found}")
    return unknown


def resolve_audio(base_dir: Path, text: str) -> Path | None:
    """The audio path a metadata file gives, relative to ``base_dir`` unless absolute."""
    text = text.strip()
    if not text:
        return None
    return base_dir / Path(text).expanduser()


def check_split_name(name: str) -> str:
    """A split name usable as a file name (``train``, ``valid``, ``test_speaker``, ...)."""
    if not SPLIT_NAME.match(name) or name in ("labels", "skipped"):
        raise DataPrepError(
            f"invalid split name {name!r}: use letters, digits, '_', '-' or '.' (not 'labels' or 'skipped')"
        )
    return name


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
            f"no {TRAIN_SPLIT!r} split among {_quoted(resolved)}: labels.json is built from it"
        )
    return resolved


# ---------------------------------------------------------------------------------------------
# Rows -> utterances


def read_audio_headers(paths: Iterable[Path], num_workers: int = 0) -> dict[Path, AudioInfo | str]:
    """Read each distinct file's header on a thread pool; an unreadable file maps to its error."""
    unique = list(dict.fromkeys(paths))
    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)

    def read(path: Path) -> AudioInfo | str:
        try:
            return audio_info(path)
        except (AudioError, OSError) as error:
            return _one_line(error)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(read, unique), total=len(unique), desc="reading audio headers", unit="file")
        )
    return dict(zip(unique, results, strict=True))


def manifest_audio_path(audio: Path, manifest_dir: Path) -> str:
    """How a manifest in ``manifest_dir`` names ``audio``: relative inside the output folder, else absolute."""
    audio = Path(os.path.abspath(audio))
    output_dir = Path(os.path.abspath(manifest_dir)).parent
    if audio.is_relative_to(output_dir):
        return Path(os.path.relpath(audio, os.path.abspath(manifest_dir))).as_posix()
    return str(audio)


def _row_problem(row: SourceRow, seen_ids: dict[str, str]) -> str:
    """The first problem a row has before its audio is opened, or ``""``."""
    if row.problem:
        return row.problem
    if row.audio is None:
        return "empty audio path"
    if not row.id.strip():
        return "empty utterance id"
    if not row.transcript.strip():
        return "empty transcript"
    for name, value in row.slots.items():
        if not value.strip():
            return f"empty slot {name!r}"
    if not row.intent.strip():
        return "empty intent"
    if row.id.strip() in seen_ids:
        return f"duplicate utterance id {row.id.strip()!r} (first at {seen_ids[row.id.strip()]})"
    return ""


def rows_to_utterances(
    rows_by_split: Mapping[str, Sequence[SourceRow]],
    manifest_dir: Path,
    *,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> tuple[dict[str, list[CheckedUtterance]], list[SkippedRow]]:
    """Check every row and turn the good ones into utterances (duration and rate from the audio).

    Ids must be unique across all splits. The rows are checked in order; without
    ``skip_invalid`` the first bad one raises, before any audio is opened when it can.

    Returns:
        The checked utterances of each split, and the rows skipped (empty without ``skip_invalid``).

    Raises:
        DataPrepError: ``"<file>:<line>: <problem>"`` for the first bad row.
    """
    problems: list[SkippedRow] = []
    seen_ids: dict[str, str] = {}
    candidates: dict[str, list[SourceRow]] = {}
    for split, rows in rows_by_split.items():
        if split != UNASSIGNED:
            candidates[split] = []
        for row in rows:
            problem = (row.problem or "no split") if split == UNASSIGNED else _row_problem(row, seen_ids)
            if problem:
                problems.append(SkippedRow(split, row.where, problem))
            else:
                seen_ids[row.id.strip()] = row.where
                candidates[split].append(row)
    if problems and not skip_invalid:
        raise _first_problem(problems)

    headers = read_audio_headers(
        (row.audio for rows in candidates.values() for row in rows if row.audio is not None), num_workers
    )
    checked: dict[str, list[CheckedUtterance]] = {}
    for split, rows in candidates.items():
        checked[split] = []
        for row in rows:
            assert row.audio is not None  # rows without audio were rejected above
            info = headers[row.audio]
            if isinstance(info, str):
                problems.append(SkippedRow(split, row.where, info))
                continue
            utterance = Utterance(
                id=row.id.strip(),
                audio=manifest_audio_path(row.audio, manifest_dir),
                duration=info.duration,
                sample_rate=info.sample_rate,
                transcript=row.transcript.strip(),
                intent=row.intent.strip(),
                slots={name: value.strip() for name, value in row.slots.items()},
                speaker=row.speaker.strip(),
                extra=dict(row.extra),
            )
            try:
                utterance.validate()
            except ManifestError as error:
                problems.append(SkippedRow(split, row.where, str(error)))
                continue
            checked[split].append(CheckedUtterance(row, utterance))
    if problems and not skip_invalid:
        raise _first_problem(problems)
    return checked, problems


def labels_from_train(
    checked: Mapping[str, list[CheckedUtterance]], *, skip_invalid: bool = False
) -> tuple[LabelSet, dict[str, list[CheckedUtterance]], list[SkippedRow]]:
    """Build the label map from the train split; check every other split's labels occur in it.

    Returns:
        The label map, the utterances kept, and the rows dropped (only with ``skip_invalid``).

    Raises:
        DataPrepError: no train utterances, or (without ``skip_invalid``) labels outside train,
            naming the first such row and listing every missing label.
    """
    train = checked.get(TRAIN_SPLIT) or []
    if not train:
        raise DataPrepError(f"no valid utterances in the {TRAIN_SPLIT!r} split: labels.json is built from it")
    labels = LabelSet.from_utterances(item.utterance for item in train)
    kept: dict[str, list[CheckedUtterance]] = {}
    problems: list[SkippedRow] = []
    missing: dict[str, None] = {}
    for split, items in checked.items():
        kept[split] = []
        for item in items:
            unknown = _labels_not_in(labels, item.utterance)
            if unknown:
                missing.update(dict.fromkeys(unknown))
                problems.append(
                    SkippedRow(split, item.row.where, f"{unknown[0]} of split {split!r} is not in train")
                )
            else:
                kept[split].append(item)
    if problems and not skip_invalid:
        first = problems[0]
        raise DataPrepError(
            f"{first.where}: {first.problem}; {len(problems)} row(s) have labels missing from "
            f"{TRAIN_SPLIT}: {', '.join(missing)}"
        )
    return labels, kept, problems


def _labels_not_in(labels: LabelSet, utterance: Utterance) -> list[str]:
    unknown = [] if utterance.intent in labels else [f"intent {utterance.intent!r}"]
    for name, value in utterance.slots.items():
        if value not in labels.slots.get(name, ()):
            unknown.append(f"slot {name}={value!r}")
    return unknown


# ---------------------------------------------------------------------------------------------
# Writing


def write_prepared(
    output_dir: Path,
    splits: Mapping[str, Sequence[Utterance]],
    labels: LabelSet,
    skipped: Sequence[SkippedRow] = (),
    fingerprint: Any | None = None,
) -> dict[str, Manifest]:
    """Validate every split, then write all manifests, ``labels.json`` (and ``skipped.txt``) at once.

    Everything goes into a temporary folder renamed onto ``<output_dir>/manifests`` when
    complete, so a failure leaves the previous contents (or nothing) in place; the ``.done``
    marker (holding ``fingerprint``) is written last.

    Raises:
        DataPrepError: an empty split, or an utterance that breaks the manifest contract.
    """
    manifest_dir = output_dir / MANIFEST_DIRNAME
    manifests: dict[str, Manifest] = {}
    for split, utterances in splits.items():
        path = manifest_dir / f"{check_split_name(split)}{MANIFEST_SUFFIX}"
        if not utterances:
            raise DataPrepError(f"split {split!r} has no valid utterances; nothing written to {manifest_dir}")
        manifest = Manifest(list(utterances), path)
        try:
            for utterance in manifest:
                utterance.validate()
            manifest.validate(labels)
        except ManifestError as error:
            raise DataPrepError(f"{path}: {error}") from None
        manifests[split] = manifest
    with atomic_directory(manifest_dir) as temporary:
        for manifest in manifests.values():
            write_manifest(temporary / manifest.path.name, manifest.utterances)  # type: ignore[union-attr]
        labels.save(temporary / LABELS_FILENAME)
        if skipped:
            atomic_write_text(temporary / SKIPPED_FILENAME, "".join(f"{row}\n" for row in skipped))
    mark_done(manifest_dir, fingerprint)
    return manifests


def read_prepared(output_dir: Path) -> dict[str, Manifest]:
    """The manifests a finished preparation wrote, checked against its ``labels.json``."""
    manifest_dir = output_dir / MANIFEST_DIRNAME
    labels = LabelSet.load(manifest_dir / LABELS_FILENAME)
    paths = sorted(manifest_dir.glob(f"*{MANIFEST_SUFFIX}"), key=lambda p: _split_order(p.stem))
    return {path.stem: read_manifest(path, labels) for path in paths}


def _split_order(split: str) -> tuple[int, str]:
    order = {"train": 0, "valid": 1, "test": 2}
    return order.get(split, 3), split


# ---------------------------------------------------------------------------------------------
# The whole preparation


def fingerprint_inputs(
    preparer: str, corpus_dir: Path | None, options: Mapping[str, Any], sources: Iterable[Path]
) -> dict[str, Any]:
    """What decides the output: preparer, corpus folder, options, and each source file's size and mtime."""
    files = {}
    for path in sources:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise DataPrepError(f"{path}: file not found") from None
        files[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns]
    return json.loads(
        json.dumps(
            {
                "preparer": preparer,
                "version": PREPARER_VERSION,
                "corpus_dir": os.path.abspath(corpus_dir) if corpus_dir is not None else None,
                "options": dict(options),
                "sources": files,
            },
            default=str,
        )
    )


def prepare_corpus(
    preparer: str,
    output_dir: str | os.PathLike,
    *,
    corpus_dir: Path | None,
    sources: Sequence[Path],
    options: Mapping[str, Any],
    read_rows: Callable[[], Mapping[str, Sequence[SourceRow]]],
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> dict[str, Manifest]:
    """Run a preparation: skip if done, read rows, check them, build labels, write.

    Args:
        preparer: the corpus's name, recorded in the fingerprint and the logs.
        output_dir: manifests go to ``<output_dir>/manifests/``.
        corpus_dir: the corpus folder (``None`` when there is none, as for CSV files).
        sources: the metadata files read; their size and mtime are part of the fingerprint.
        options: everything else that changes the output (JSON-serialisable).
        read_rows: reads the metadata into rows, per split.
        skip_invalid: drop bad rows (logged, listed in ``skipped.txt``) instead of failing.
        num_workers: threads reading audio headers (0: automatic).

    Returns:
        The manifest of each split.
    """
    output_dir = Path(output_dir)
    manifest_dir = output_dir / MANIFEST_DIRNAME
    resolved = {"corpus_dir": str(corpus_dir) if corpus_dir else None, "output_dir": str(output_dir)}
    logger.info(
        "preparing %s: %s",
        preparer,
        json.dumps({**resolved, **options, "skip_invalid": skip_invalid}, default=str),
    )
    fingerprint = fingerprint_inputs(preparer, corpus_dir, {**options, "skip_invalid": skip_invalid}, sources)
    if is_done(manifest_dir, fingerprint):
        logger.info("%s: already prepared from the same inputs, skipping", manifest_dir)
        return read_prepared(output_dir)

    rows_by_split = read_rows()
    for split, rows in rows_by_split.items():
        if split != UNASSIGNED:
            check_split_name(split)
        logger.info("%s: %d row(s) read", split or "no split", len(rows))
    checked, skipped = rows_to_utterances(
        rows_by_split, manifest_dir, skip_invalid=skip_invalid, num_workers=num_workers
    )
    labels, checked, label_skipped = labels_from_train(checked, skip_invalid=skip_invalid)
    skipped = sorted(skipped + label_skipped, key=lambda row: _split_order(row.split))
    if skipped:
        log_skipped(skipped)
    splits = {split: [item.utterance for item in items] for split, items in checked.items()}
    manifests = write_prepared(output_dir, splits, labels, skipped, fingerprint)
    for split, manifest in manifests.items():
        logger.info(
            "%s: %d utterances, %.2f h, %d intents, %d speakers -> %s",
            split, len(manifest), manifest.total_duration / 3600, len({u.intent for u in manifest}),
            len({u.speaker for u in manifest if u.speaker}), manifest.path,
        )  # fmt: skip
    logger.info(
        "labels: %d intents%s", labels.num_intents, f", slots {_quoted(labels.slots)}" if labels.slots else ""
    )
    return manifests


def log_skipped(skipped: Sequence[SkippedRow]) -> None:
    """Log how many rows were skipped, per split, and list the first of them."""
    per_split = Counter(row.split for row in skipped)
    logger.warning(
        "skipped %d invalid row(s) (%s), listed in %s/%s",
        len(skipped), ", ".join(f"{split}: {count}" for split, count in per_split.items()),
        MANIFEST_DIRNAME, SKIPPED_FILENAME,
    )  # fmt: skip
    for row in skipped[:SKIPPED_SHOWN]:
        logger.warning("skipped %s", row)
    if len(skipped) > SKIPPED_SHOWN:
        logger.warning("... and %d more", len(skipped) - SKIPPED_SHOWN)


def _first_problem(problems: Sequence[SkippedRow]) -> DataPrepError:
    first = problems[0]
    more = (
        f" (and {len(problems) - 1} more invalid row(s); --skip-invalid drops them)"
        if len(problems) > 1
        else ""
    )
    return DataPrepError(f"{first.where}: {first.problem}{more}")


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s*\n\s*", " ", str(error).strip()) or type(error).__name__


# ---------------------------------------------------------------------------------------------
# Command line


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (where there is one to show); description and epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or any(action.default is value for value in (None, False, argparse.SUPPRESS))
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser(
    module: str, description: str, *, epilog: str | None = None, corpus_dir_help: str | None = None
) -> argparse.ArgumentParser:
    """A preparer's parser with the shared options: ``--corpus-dir``, ``--out``, ``--skip-invalid``,
    ``--num-workers``, ``--log-level``.

    Args:
        module: the module run with ``python -m``.
        corpus_dir_help: help for an optional ``--corpus-dir``; ``None`` makes it required.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        required=corpus_dir_help is None,
        default=None,
        help=corpus_dir_help or "the corpus folder, as released",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help=f"output folder; manifests and labels.json go to OUT/{MANIFEST_DIRNAME}/",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help=f"drop invalid rows (logged, and listed in OUT/{MANIFEST_DIRNAME}/{SKIPPED_FILENAME}) "
        "instead of stopping at the first",
    )
    parser.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=0,
        help="threads reading audio headers (0: automatic)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level",
    )
    return parser


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    prepare: Callable[[argparse.Namespace], Mapping[str, Manifest]],
) -> int:
    """Parse ``argv``, set up logging, run ``prepare``; an error is one logged line and exit status 1."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    command_logger = logging.getLogger(parser.prog.split()[-1])
    command_logger.info("%s %s", parser.prog, shlex.join(sys.argv[1:] if argv is None else argv))
    start = time.monotonic()
    try:
        prepare(args)
    except (DataPrepError, ManifestError, LabelError, AudioError, OSError) as error:
        command_logger.error("%s", _one_line(error))
        return 1
    command_logger.info("done in %.1f s", time.monotonic() - start)
    return 0
