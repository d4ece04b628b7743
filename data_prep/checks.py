"""Rows -> utterances: every row checked (fields, unique ids, a readable audio header), and the
label map built from the train split, with every other split's labels checked against it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from data_prep.rows import (
    TRAIN_SPLIT,
    UNASSIGNED,
    CheckedUtterance,
    DataPrepError,
    SkippedRow,
    SourceRow,
    one_line,
)
from pipeline.data.audio import AudioError, AudioInfo, audio_info
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import ManifestError, Utterance


def read_audio_headers(paths: Iterable[Path], num_workers: int = 0) -> dict[Path, AudioInfo | str]:
    """Read each distinct file's header on a thread pool; an unreadable file maps to its error."""
    unique = list(dict.fromkeys(paths))
    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)

    def read(path: Path) -> AudioInfo | str:
        try:
            return audio_info(path)
        except (AudioError, OSError) as error:
            return one_line(error)

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


def row_problem(row: SourceRow, seen_ids: dict[str, str], require_transcript: bool = True) -> str:
    """The first problem a row has before its audio is opened, or ``""`` (an empty transcript is
    one unless ``require_transcript`` is off, as for recordings only evaluated)."""
    if row.problem:
        return row.problem
    if row.audio is None:
        return "empty audio path"
    if not row.id.strip():
        return "empty utterance id"
    if require_transcript and not row.transcript.strip():
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
    require_transcript: bool = True,
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
            problem = (
                (row.problem or "no split")
                if split == UNASSIGNED
                else row_problem(row, seen_ids, require_transcript)
            )
            if problem:
                problems.append(SkippedRow(split, row.where, problem))
            else:
                seen_ids[row.id.strip()] = row.where
                candidates[split].append(row)
    if problems and not skip_invalid:
        raise first_problem(problems)

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
        raise first_problem(problems)
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
            unknown = labels_not_in(labels, item.utterance)
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


def labels_not_in(labels: LabelSet, utterance: Utterance) -> list[str]:
    unknown = [] if utterance.intent in labels else [f"intent {utterance.intent!r}"]
    for name, value in utterance.slots.items():
        if value not in labels.slots.get(name, ()):
            unknown.append(f"slot {name}={value!r}")
    return unknown


def first_problem(problems: Sequence[SkippedRow]) -> DataPrepError:
    """The error that names the first bad row (and how many more there are)."""
    first = problems[0]
    more = (
        f" (and {len(problems) - 1} more invalid row(s); --skip-invalid drops them)"
        if len(problems) > 1
        else ""
    )
    return DataPrepError(f"{first.where}: {first.problem}{more}")
