"""The whole preparation every corpus preparer shares (``data_prep.fsc``, ``data_prep.slurp``, ``data_prep.csv_manifest``).

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

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_prep.checks import labels_from_train, rows_to_utterances
from data_prep.rows import (
    MANIFEST_DIRNAME,
    SKIPPED_FILENAME,
    UNASSIGNED,
    DataPrepError,
    SkippedRow,
    SourceRow,
    check_split_name,
    quoted_names,
    split_order,
)
from pipeline.core.io import atomic_directory, atomic_write_text, is_done, mark_done
from pipeline.data.labels import LABELS_FILENAME, LabelSet
from pipeline.data.manifest import (
    MANIFEST_SUFFIX,
    Manifest,
    ManifestError,
    Utterance,
    read_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

PREPARER_VERSION = 1  # bump when the manifests that given inputs produce change
SKIPPED_SHOWN = 20  # skipped rows listed in the log; all of them go to skipped.txt


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
    paths = sorted(manifest_dir.glob(f"*{MANIFEST_SUFFIX}"), key=lambda p: split_order(p.stem))
    return {path.stem: read_manifest(path, labels) for path in paths}


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
    skipped = sorted(skipped + label_skipped, key=lambda row: split_order(row.split))
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
        "labels: %d intents%s",
        labels.num_intents,
        f", slots {quoted_names(labels.slots)}" if labels.slots else "",
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
