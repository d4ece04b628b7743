"""Recordings to evaluate on, added to a prepared corpus as one more split (never trained on).

``python -m data_prep.csv_manifest --out data/mine --eval-csv kitchen=recordings.csv`` writes
``data/mine/manifests/kitchen.jsonl`` beside the corpus's splits, checked against its
``labels.json``. The recipes evaluate every split but train and valid, so the new split is
evaluated and reported like the others; training only ever reads train and valid.

Columns (matched case-insensitively, the aliases of :mod:`data_prep.csv_manifest`):

- ``audio`` [path, file, audio_path, wav]: relative to the CSV's folder, or absolute;
- ``intent`` [label];
- ``slot:NAME`` (any number): the slot's value; an empty cell is the slot's ``none`` where
  ``labels.json`` has that value;
- ``transcript`` [text, transcription, sentence] (optional): without it a line is audio-only,
  which is all a speech model's evaluation needs (the text teacher and the cascades skip it);
- ``speaker``, ``id`` (optional), and any other column kept as an extra field.

Every intent and slot value must be in ``labels.json``: a recording of a command the corpus
cannot say is a one-line error naming the file and the line. The split names the recipes hold
(``train``, ``valid``) and the corpus's own splits cannot be replaced; the eval splits written
are listed in ``manifests/eval_csv.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from data_prep.checks import labels_not_in, rows_to_utterances
from data_prep.csv_columns import column_roles, default_id
from data_prep.rows import MANIFEST_DIRNAME, DataPrepError, SourceRow, check_split_name
from data_prep.tables import read_table, resolve_audio
from pipeline.core.io import read_json, write_json
from pipeline.data.labels import LABELS_FILENAME, LabelSet
from pipeline.data.manifest import MANIFEST_SUFFIX, Manifest, write_manifest

logger = logging.getLogger(__name__)

EVAL_REGISTRY = "eval_csv.json"  # beside the manifests: {split: the CSV it came from}
RESERVED_SPLITS = ("train", "valid")
NONE_VALUE = "none"


def read_eval_rows(path: Path, labels: LabelSet) -> list[SourceRow]:
    """The rows of an evaluation CSV (no ``split`` column: the split is given)."""
    table = read_table(path)
    roles, slot_columns, extra = column_roles(table, has_split=True, required=("audio", "intent"))
    unknown = [name for name in slot_columns if name not in labels.slots]
    if unknown:
        raise DataPrepError(
            f"{path}: slot column(s) {', '.join(unknown)} not in {LABELS_FILENAME} "
            f"(its slots: {', '.join(labels.slots) or 'none'})"
        )
    rows = []
    for record in table.rows:
        values = {column: (value or "").strip() for column, value in record.values.items()}
        audio = values.get(roles["audio"], "")
        slots = {}
        for name, column in slot_columns.items():
            value = values.get(column, "")
            slots[name] = value or (NONE_VALUE if NONE_VALUE in labels.slots[name] else "")
        rows.append(
            SourceRow(
                source=path,
                line=record.line,
                id=values.get(roles["id"], "") if "id" in roles else default_id(audio),
                audio=resolve_audio(path.parent, audio),
                transcript=values.get(roles["transcript"], "") if "transcript" in roles else "",
                intent=values.get(roles["intent"], ""),
                slots=slots,
                speaker=values.get(roles["speaker"], "") if "speaker" in roles else "",
                extra={column: values.get(column, "") for column in extra},
                problem=record.problem,
            )
        )
    return rows


def add_eval_split(
    data_dir: str | os.PathLike,
    name: str,
    csv_path: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> Manifest:
    """Write split ``name`` of the prepared corpus in ``data_dir`` from an evaluation CSV.

    Args:
        data_dir: the corpus folder (``manifests/`` with ``labels.json`` inside).
        name: the split's name (not ``train``, ``valid`` or a split of the corpus itself).
        csv_path: the CSV/TSV file (relative paths are taken from ``base_dir``).
        base_dir: default: the current folder.
        skip_invalid: drop bad rows (logged) instead of failing.
        num_workers: threads reading audio headers (0: automatic).

    Returns:
        The new split's manifest.

    Raises:
        DataPrepError: no prepared corpus, a reserved name, a missing column, or a bad row
            (one line naming the file and the line).
    """
    manifest_dir = Path(data_dir) / MANIFEST_DIRNAME
    labels_path = manifest_dir / LABELS_FILENAME
    if not labels_path.is_file():
        raise DataPrepError(f"{labels_path}: not found; prepare the corpus before adding --eval-csv splits")
    split = check_split_name(name)
    registry_path = manifest_dir / EVAL_REGISTRY
    registry = read_json(registry_path) if registry_path.is_file() else {}
    target = manifest_dir / f"{split}{MANIFEST_SUFFIX}"
    if split in RESERVED_SPLITS or (target.is_file() and split not in registry):
        raise DataPrepError(
            f"--eval-csv {split}={csv_path}: {target} is a split of the corpus itself; give the recordings another name"
        )
    csv_path = Path(base_dir or Path.cwd()) / Path(csv_path).expanduser()
    labels = LabelSet.load(labels_path)
    rows = read_eval_rows(csv_path, labels)
    checked, skipped = rows_to_utterances(
        {split: rows},
        manifest_dir,
        skip_invalid=skip_invalid,
        num_workers=num_workers,
        require_transcript=False,
    )
    kept = []
    for item in checked[split]:
        unknown = labels_not_in(labels, item.utterance)
        if unknown and not skip_invalid:
            raise DataPrepError(f"{item.row.where}: {unknown[0]} is not in {labels_path}")
        if unknown:
            skipped.append(item.row.where)
        else:
            kept.append(item.utterance)
    for row in skipped:
        logger.warning("skipped %s", row)
    if not kept:
        raise DataPrepError(f"{csv_path}: no valid recordings")
    write_manifest(target, kept)
    write_json(registry_path, {**registry, split: os.path.abspath(csv_path)})
    manifest = Manifest(kept, target)
    without_text = sum(not utterance.has_transcript for utterance in kept)
    logger.info(
        "%s: %d recordings, %.2f h (%d without transcript: audio-only), never trained on -> %s",
        split, len(kept), manifest.total_duration / 3600, without_text, target,
    )  # fmt: skip
    return manifest
