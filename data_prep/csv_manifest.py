"""Your own CSV/TSV files -> manifests.

``python -m data_prep.csv_manifest --csv train=train.csv --csv valid=dev.tsv --csv test=test.csv --out data/mine``
or, with one file holding a ``split`` column: ``--csv all.csv``. ``--eval-csv NAME=FILE.csv`` adds
recordings to evaluate on as split ``NAME`` of a prepared corpus (``transcript`` optional; see
:mod:`data_prep.eval_csv`), with or without ``--csv``.

Columns (header names are matched case-insensitively; the aliases in brackets also work):

- ``audio`` [path, file, audio_path, wav]: relative to the CSV's folder, or absolute;
- ``transcript`` [text, transcription, sentence];
- ``intent`` [label];
- ``speaker`` [speaker_id, speakerid] (optional);
- ``id`` [utt_id, utterance_id] (optional): by default the audio path as written, without its
  suffix, with ``/`` as ``-`` (``spk1/001.wav`` -> ``spk1-001``);
- ``split`` (only in a file given without ``SPLIT=``): the row's split;
- ``slot:NAME`` (optional, any number): slot values, which also go to ``labels.json``;
- any other column is kept as an extra field of each utterance (a string).

``duration``, ``sample_rate`` and ``slots`` are computed, so a column with one of those names
is an error. The delimiter is a tab for ``.tsv``/``.tab``, a comma for ``.csv``, and otherwise
whichever of ``, TAB ; |`` the header holds most of.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from data_prep.command_line import build_parser, run_cli
from data_prep.csv_columns import (
    SPLIT_COLUMN,
    column_roles,
    default_id,
)
from data_prep.eval_csv import add_eval_split
from data_prep.prepare import prepare_corpus
from data_prep.rows import TRAIN_SPLIT, UNASSIGNED, DataPrepError, SourceRow, check_split_name
from data_prep.tables import read_table, resolve_audio
from pipeline.data.manifest import Manifest

logger = logging.getLogger("data_prep.csv_manifest")  # not __name__: "__main__" under python -m

CsvSource = tuple[str | None, Path]  # (split, or None to read a 'split' column; the file)
# {split: file}, or files (each with a 'split' column) and (split, file) pairs
CsvFiles = (
    Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike | tuple[str | None, str | os.PathLike]]
)


def read_csv_rows(split: str | None, path: Path) -> dict[str, list[SourceRow]]:
    """Read one CSV/TSV file into rows per split (``split``, or each row's ``split`` column)."""
    table = read_table(path)
    roles, slot_columns, extra_columns = column_roles(table, has_split=split is not None)
    if extra_columns:
        logger.info("%s: keeping column(s) %s as extra fields", path, ", ".join(map(repr, extra_columns)))
    rows: dict[str, list[SourceRow]] = {}
    for record in table.rows:
        values = {column: (value or "").strip() for column, value in record.values.items()}
        problem = record.problem
        row_split = split or values.get(roles.get(SPLIT_COLUMN, ""), "")
        if not row_split:
            row_split, problem = UNASSIGNED, problem or "empty split"
        elif split is None:
            try:
                check_split_name(row_split)
            except DataPrepError as error:
                row_split, problem = UNASSIGNED, problem or str(error)
        audio = values.get(roles["audio"], "")
        rows.setdefault(row_split, []).append(
            SourceRow(
                source=path,
                line=record.line,
                id=values.get(roles["id"], "") if "id" in roles else default_id(audio),
                audio=resolve_audio(path.parent, audio),
                transcript=values.get(roles["transcript"], ""),
                intent=values.get(roles["intent"], ""),
                slots={name: values.get(column, "") for name, column in slot_columns.items()},
                speaker=values.get(roles["speaker"], "") if "speaker" in roles else "",
                extra={column: values.get(column, "") for column in extra_columns},
                problem=problem,
            )
        )
    return rows


def parse_csv_source(text: str) -> CsvSource:
    """``"train=a.csv"`` -> ``("train", Path("a.csv"))``; ``"all.csv"`` -> ``(None, Path("all.csv"))``."""
    name, separator, path = text.partition("=")
    if separator and name.strip() and path.strip() and "/" not in name and os.sep not in name:
        return check_split_name(name.strip()), Path(path.strip())
    return None, Path(text.strip())


def _normalise_sources(
    csv_files: CsvFiles,
    base_dir: Path,
) -> list[CsvSource]:
    items = list(csv_files.items()) if isinstance(csv_files, Mapping) else list(csv_files)
    sources: list[CsvSource] = []
    for item in items:
        split, path = item if isinstance(item, tuple) else (None, item)
        path = base_dir / Path(path).expanduser()
        if not path.is_file():
            raise DataPrepError(f"{path}: CSV file not found")
        sources.append((check_split_name(split) if split is not None else None, path))
    if not sources:
        raise DataPrepError("no CSV files given")
    given = [split for split, _ in sources if split is not None]
    repeated = sorted({split for split in given if given.count(split) > 1})
    if repeated:
        raise DataPrepError(f"split(s) given by more than one file: {', '.join(repeated)}")
    return sources


def prepare_csv(
    csv_files: CsvFiles,
    output_dir: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> dict[str, Manifest]:
    """Write manifests and ``labels.json`` from your own CSV/TSV files to ``<output_dir>/manifests/``.

    Args:
        csv_files: ``{split: file}``, or files and ``(split, file)`` pairs, where a file without
            a split holds a ``split`` column. One split must be ``train``.
        output_dir: the output folder.
        base_dir: the folder relative CSV paths are taken from (default: the current folder).
        skip_invalid: drop invalid rows (listed in ``skipped.txt``) instead of failing.
        num_workers: threads reading audio headers (0: automatic).

    Returns:
        The manifest of each split.

    Raises:
        DataPrepError: a missing file or column, or an invalid row (one line, with file and line).
    """
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    sources = _normalise_sources(csv_files, base_dir)

    def read_rows() -> dict[str, list[SourceRow]]:
        splits: dict[str, list[SourceRow]] = {}
        for split, path in sources:
            for name, rows in read_csv_rows(split, path).items():
                splits.setdefault(name, []).extend(rows)
        if TRAIN_SPLIT not in splits:
            raise DataPrepError(f"no {TRAIN_SPLIT!r} split in {', '.join(str(p) for _, p in sources)}")
        return splits

    return prepare_corpus(
        "csv",
        output_dir,
        corpus_dir=None,
        sources=[path for _, path in sources],
        options={"csv_files": [[split, os.path.abspath(path)] for split, path in sources]},
        read_rows=read_rows,
        skip_invalid=skip_invalid,
        num_workers=num_workers,
    )


CSV_HELP = """\
Columns (matched case-insensitively; aliases in brackets):
  audio [path, file, audio_path, wav]   relative to the CSV's folder, or absolute
  transcript [text, transcription, sentence]
  intent [label]
  speaker [speaker_id, speakerid]       optional
  id [utt_id, utterance_id]             optional; default: the audio path as written,
                                        without suffix, '/' as '-' (spk1/001.wav -> spk1-001)
  split                                 only in a file given without SPLIT=
  slot:NAME                             optional slot values (also listed in labels.json)
  anything else                         kept as an extra field of each utterance
duration, sample_rate and slots are read from the audio: columns with those names are errors.
Delimiter: tab for .tsv/.tab, comma for .csv, else the header's most frequent of , TAB ; |

Examples:
  python -m data_prep.csv_manifest --csv train=train.csv --csv valid=dev.csv --csv test=test.tsv --out data/mine
  python -m data_prep.csv_manifest --csv all.csv --out data/mine     (all.csv has a split column)
  python -m data_prep.csv_manifest --eval-csv kitchen=rec.csv --out data/synthetic_small
        (recordings as split 'kitchen' of a prepared corpus, evaluated, never trained on: columns
         audio, intent, slot:NAME..., transcript optional; intents and slot values from its labels.json)
"""


def build_csv_parser() -> argparse.ArgumentParser:
    parser = build_parser(
        "data_prep.csv_manifest",
        "Prepare manifests and labels.json (in OUT/manifests/) from your own CSV/TSV files.",
        epilog=CSV_HELP,
        corpus_dir_help="folder relative --csv paths are taken from (default: the current folder)",
    )
    parser.add_argument(
        "--csv",
        dest="csv_files",
        action="append",
        default=[],
        metavar="[SPLIT=]PATH",
        help="a CSV/TSV file holding SPLIT (repeat per split; one must be train), or, without SPLIT=, "
        "a file with a 'split' column",
    )
    parser.add_argument(
        "--eval-csv",
        dest="eval_csv_files",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="recordings to evaluate on, added as split NAME of the corpus in OUT (after --csv, if "
        "given): columns audio, intent, slot:NAME..., transcript optional; never trained on",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m data_prep.csv_manifest``: see ``--help``."""

    def prepare(args: argparse.Namespace) -> dict[str, Manifest]:
        manifests: dict[str, Manifest] = {}
        if args.csv_files:
            manifests = prepare_csv(
                [parse_csv_source(text) for text in args.csv_files],
                args.out,
                base_dir=args.corpus_dir,
                skip_invalid=args.skip_invalid,
                num_workers=args.num_workers,
            )
        for text in args.eval_csv_files:
            name, path = parse_csv_source(text)
            if name is None:
                raise DataPrepError(f"--eval-csv {text}: give the split's name, as NAME=PATH")
            manifests[name] = add_eval_split(
                args.out, name, path, args.corpus_dir, args.skip_invalid, args.num_workers
            )
        return manifests

    parser = build_csv_parser()
    arguments = parser.parse_args(argv)
    if not arguments.csv_files and not arguments.eval_csv_files:
        parser.error("give --csv, --eval-csv or both")
    return run_cli(parser, argv, prepare)


if __name__ == "__main__":
    sys.exit(main())
