"""Fluent Speech Commands (FSC) -> manifests.

``python -m data_prep.fsc --corpus-dir fluent_speech_commands_dataset --out data/fsc``

The release layout::

    <corpus>/data/{train,valid,test}_data.csv   ,path,speakerId,transcription,action,object,location
    <corpus>/wavs/speakers/<speakerId>/<uuid>.wav

``path`` is relative to the corpus folder. Each row becomes one utterance: id
``<speakerId>-<wav stem>``, intent ``<action>_<object>_<location>`` (``activate_lights_kitchen``,
``change language_Chinese_none``), slots ``action``, ``object``, ``location``, speaker
``speakerId``. Other split files with the same columns (the speaker and utterance challenge
splits, say) are read through ``split_files`` / ``--splits``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from data_prep.command_line import build_parser, run_cli
from data_prep.prepare import prepare_corpus
from data_prep.rows import DataPrepError, SourceRow
from data_prep.tables import check_columns, parse_split_files, read_table, resolve_audio, resolve_split_files
from pipeline.data.manifest import Manifest

logger = logging.getLogger("data_prep.fsc")  # not __name__: "__main__" under python -m

SLOT_COLUMNS = ("action", "object", "location")
COLUMNS = ("path", "speakerId", "transcription", *SLOT_COLUMNS)
DEFAULT_SPLIT_FILES = {
    "train": "data/train_data.csv",
    "valid": "data/valid_data.csv",
    "test": "data/test_data.csv",
}


def read_fsc_csv(path: Path, corpus_dir: Path) -> list[SourceRow]:
    """Read one FSC split file into rows (audio paths taken from ``corpus_dir``).

    Raises:
        DataPrepError: the file is missing or lacks one of the FSC columns.
    """
    table = read_table(path, delimiter=",")
    unknown = check_columns(table, COLUMNS)
    if unknown:
        logger.warning("%s: ignoring column(s) %s", path, ", ".join(repr(name) for name in unknown))
    rows = []
    for record in table.rows:
        values = {name: (record.values.get(name) or "").strip() for name in COLUMNS}
        slots = {name: values[name] for name in SLOT_COLUMNS}
        speaker = values["speakerId"]
        stem = Path(values["path"]).stem
        rows.append(
            SourceRow(
                source=path,
                line=record.line,
                id=f"{speaker}-{stem}" if speaker and stem else stem,
                audio=resolve_audio(corpus_dir, values["path"]),
                transcript=values["transcription"],
                intent="_".join(slots.values()),
                slots=slots,
                speaker=speaker,
                problem=record.problem,
            )
        )
    return rows


def prepare_fsc(
    corpus_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    split_files: Mapping[str, str | os.PathLike] | None = None,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> dict[str, Manifest]:
    """Write FSC manifests and ``labels.json`` to ``<output_dir>/manifests/``.

    Args:
        corpus_dir: the FSC release folder (holding ``data/`` and ``wavs/``).
        output_dir: the output folder.
        split_files: split name -> CSV (relative to ``corpus_dir`` or absolute); must include
            ``train``. Default: the release's ``data/{train,valid,test}_data.csv``.
        skip_invalid: drop invalid rows (listed in ``skipped.txt``) instead of failing.
        num_workers: threads reading audio headers (0: automatic).

    Returns:
        The manifest of each split.

    Raises:
        DataPrepError: a missing file or column, or an invalid row (one line, with file and line).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise DataPrepError(f"{corpus_dir}: corpus folder not found")
    files = resolve_split_files(corpus_dir, split_files or DEFAULT_SPLIT_FILES)
    return prepare_corpus(
        "fsc",
        output_dir,
        corpus_dir=corpus_dir,
        sources=list(files.values()),
        options={"split_files": {name: str(path) for name, path in files.items()}},
        read_rows=lambda: {name: read_fsc_csv(path, corpus_dir) for name, path in files.items()},
        skip_invalid=skip_invalid,
        num_workers=num_workers,
    )


def build_fsc_parser() -> argparse.ArgumentParser:
    parser = build_parser(
        "data_prep.fsc",
        "Prepare Fluent Speech Commands: one manifest per split and labels.json in OUT/manifests/.",
        epilog=(
            "Split files have the release's columns: ,path,speakerId,transcription,action,object,location.\n"
            "Example with a challenge split (a CSV with the same columns, wherever it is kept):\n"
            "  python -m data_prep.fsc --corpus-dir fluent_speech_commands_dataset --out data/fsc_speaker \\\n"
            "    --splits train=data/train_data.csv,valid=data/valid_data.csv,test=/path/to/speaker_test_data.csv"
        ),
    )
    parser.add_argument(
        "--splits",
        default=",".join(f"{name}={path}" for name, path in DEFAULT_SPLIT_FILES.items()),
        help="NAME=CSV[,NAME=CSV...]: the splits to write (must include train), CSV paths relative "
        "to --corpus-dir or absolute",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m data_prep.fsc``: see ``--help``."""

    def prepare(args: argparse.Namespace) -> dict[str, Manifest]:
        return prepare_fsc(
            args.corpus_dir,
            args.out,
            split_files=parse_split_files(args.splits),
            skip_invalid=args.skip_invalid,
            num_workers=args.num_workers,
        )

    return run_cli(build_fsc_parser(), argv, prepare)


if __name__ == "__main__":
    sys.exit(main())
