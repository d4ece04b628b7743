"""SLURP -> manifests.

``python -m data_prep.slurp --corpus-dir slurp --out data/slurp``

The release layout::

    <corpus>/dataset/slurp/{train,devel,test}.jsonl   (and train_synthetic.jsonl)
    <corpus>/audio/slurp_real/audio-<n>[-headset].flac
    <corpus>/audio/slurp_synth/audio-<n>.flac

Each JSON line is one sentence (``slurp_id``, ``sentence``, ``scenario``, ``action``,
``recordings``, ...) with one or more recordings. Every recording becomes one utterance: id
the recording's file stem, intent ``<scenario>_<action>`` (``alarm_set``), slots ``scenario``
and ``action``, transcript the sentence, ``slurp_id`` kept as an extra field. SLURP names no
speakers, so ``speaker`` is empty. Splits: ``train`` (plus the synthetic recordings with
``with_synthetic``), ``valid`` (from ``devel``), ``test``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from data_prep.command_line import build_parser, run_cli
from data_prep.prepare import prepare_corpus
from data_prep.rows import DataPrepError, SourceRow
from data_prep.tables import resolve_audio, resolve_split_files
from pipeline.data.manifest import Manifest

logger = logging.getLogger("data_prep.slurp")  # not __name__: "__main__" under python -m

METADATA_DIR = "dataset/slurp"
SPLIT_FILES = {"train": "train.jsonl", "valid": "devel.jsonl", "test": "test.jsonl"}
SYNTHETIC_FILE = "train_synthetic.jsonl"
REAL_AUDIO_DIR = "slurp_real"
SYNTHETIC_AUDIO_DIR = "slurp_synth"
RECORDINGS = ("all", "headset")
HEADSET_MARK = "-headset"
FIELDS = ("slurp_id", "sentence", "scenario", "action", "recordings")


def _record_rows(path: Path, line: int, record: Any, audio_dir: Path, recordings: str) -> list[SourceRow]:
    """The rows of one JSON line: one per recording kept, or one with the line's problem."""
    if not isinstance(record, dict):
        return [SourceRow(path, line, problem=f"expected a JSON object, got {type(record).__name__}")]
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return [
            SourceRow(path, line, problem=f"missing field(s) {', '.join(repr(name) for name in missing)}")
        ]
    texts = {name: record[name] for name in ("sentence", "scenario", "action")}
    wrong = [name for name, value in texts.items() if not isinstance(value, str)]
    if wrong or not isinstance(record["recordings"], list):
        return [SourceRow(path, line, problem=f"wrong type of field(s) {', '.join(wrong or ['recordings'])}")]
    rows = []
    for number, recording in enumerate(record["recordings"], start=1):
        file = recording.get("file") if isinstance(recording, dict) else None
        if not isinstance(file, str) or not file.strip():
            rows.append(SourceRow(path, line, problem=f"recording {number} has no 'file'"))
            continue
        if recordings == "headset" and HEADSET_MARK not in file:
            continue
        slots = {"scenario": texts["scenario"].strip(), "action": texts["action"].strip()}
        rows.append(
            SourceRow(
                source=path,
                line=line,
                id=Path(file.strip()).stem,
                audio=resolve_audio(audio_dir, file),
                transcript=texts["sentence"],
                intent=f"{slots['scenario']}_{slots['action']}" if all(slots.values()) else "",
                slots=slots,
                extra={"slurp_id": record["slurp_id"]},
            )
        )
    return rows


def read_slurp_jsonl(path: Path, audio_dir: Path, recordings: str = "all") -> list[SourceRow]:
    """Read one SLURP JSON Lines file into rows, one per recording (audio under ``audio_dir``).

    A line that is not valid JSON, or lacks a field, becomes a row with its problem set.
    """
    if recordings not in RECORDINGS:
        raise DataPrepError(f"unknown recordings choice {recordings!r}; choose from {', '.join(RECORDINGS)}")
    rows: list[SourceRow] = []
    without_recordings = 0
    try:
        with open(path, encoding="utf-8") as stream:
            for line, text in enumerate(stream, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as error:
                    rows.append(SourceRow(path, line, problem=f"not valid JSON ({error.msg})"))
                    continue
                record_rows = _record_rows(path, line, record, audio_dir, recordings)
                without_recordings += not record_rows
                rows += record_rows
    except UnicodeDecodeError as error:
        raise DataPrepError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if without_recordings:
        which = "headset recordings" if recordings == "headset" else "recordings"
        logger.info("%s: %d sentence(s) without %s left out", path, without_recordings, which)
    return rows


def prepare_slurp(
    corpus_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    audio_dir: str | os.PathLike | None = None,
    with_synthetic: bool = False,
    recordings: str = "all",
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> dict[str, Manifest]:
    """Write SLURP manifests (train, valid, test) and ``labels.json`` to ``<output_dir>/manifests/``.

    Args:
        corpus_dir: the SLURP folder (holding ``dataset/slurp/``).
        output_dir: the output folder.
        audio_dir: the folder holding ``slurp_real/`` (and ``slurp_synth/``); default
            ``<corpus_dir>/audio``.
        with_synthetic: add ``train_synthetic.jsonl`` (audio in ``slurp_synth/``) to train.
        recordings: ``all``, or ``headset`` for only the recordings named ``*-headset.*``.
        skip_invalid: drop invalid rows (listed in ``skipped.txt``) instead of failing.
        num_workers: threads reading audio headers (0: automatic).

    Returns:
        The manifest of each split.

    Raises:
        DataPrepError: a missing file, or an invalid line (one line, with file and line).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise DataPrepError(f"{corpus_dir}: corpus folder not found")
    if recordings not in RECORDINGS:
        raise DataPrepError(f"unknown recordings choice {recordings!r}; choose from {', '.join(RECORDINGS)}")
    audio_root = Path(audio_dir) if audio_dir is not None else corpus_dir / "audio"
    metadata_dir = corpus_dir / METADATA_DIR
    files = resolve_split_files(metadata_dir, SPLIT_FILES)
    synthetic = (
        resolve_split_files(metadata_dir, {"train": SYNTHETIC_FILE})["train"] if with_synthetic else None
    )

    def read_rows() -> dict[str, list[SourceRow]]:
        splits = {
            name: read_slurp_jsonl(path, audio_root / REAL_AUDIO_DIR, recordings)
            for name, path in files.items()
        }
        if synthetic is not None:
            splits["train"] += read_slurp_jsonl(synthetic, audio_root / SYNTHETIC_AUDIO_DIR, recordings="all")
        return splits

    return prepare_corpus(
        "slurp",
        output_dir,
        corpus_dir=corpus_dir,
        sources=[*files.values(), *([synthetic] if synthetic else [])],
        options={
            "audio_dir": os.path.abspath(audio_root),
            "with_synthetic": with_synthetic,
            "recordings": recordings,
        },
        read_rows=read_rows,
        skip_invalid=skip_invalid,
        num_workers=num_workers,
    )


def build_slurp_parser() -> argparse.ArgumentParser:
    parser = build_parser(
        "data_prep.slurp",
        "Prepare SLURP: train, valid (from devel) and test manifests and labels.json in OUT/manifests/, "
        "one utterance per recording.",
    )
    parser.add_argument(
        "--audio-dir",
        type=Path,
        default=None,
        help="folder holding slurp_real/ (and slurp_synth/) (default: CORPUS_DIR/audio)",
    )
    parser.add_argument(
        "--with-synthetic",
        action="store_true",
        help=f"add {SYNTHETIC_FILE} (audio in {SYNTHETIC_AUDIO_DIR}/) to the train split",
    )
    parser.add_argument(
        "--recordings",
        choices=RECORDINGS,
        default="all",
        help=f"which real recordings to keep: all, or only headset ones (file names with {HEADSET_MARK!r})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m data_prep.slurp``: see ``--help``."""

    def prepare(args: argparse.Namespace) -> dict[str, Manifest]:
        return prepare_slurp(
            args.corpus_dir,
            args.out,
            audio_dir=args.audio_dir,
            with_synthetic=args.with_synthetic,
            recordings=args.recordings,
            skip_invalid=args.skip_invalid,
            num_workers=args.num_workers,
        )

    return run_cli(build_slurp_parser(), argv, prepare)


if __name__ == "__main__":
    sys.exit(main())
