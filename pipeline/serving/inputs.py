"""What ``slukd predict`` is given: audio files, directories, ``@LIST`` files and ``-`` (stdin); and
waveforms padded into one batch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.data.audio import AUDIO_SUFFIXES
from pipeline.data.batching import pad_sequences


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), by suffix."""
    return sorted(
        path for path in Path(folder).rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
    )


def expand_inputs(items: Sequence[str], stdin: Iterable[str] | None = None) -> list[tuple[str, str | None]]:
    """What ``slukd predict`` was given, as ``(file, problem)`` pairs (problem ``None`` when fine).

    An item is an audio file; a directory (its audio files, recursive, sorted); ``@LIST``, a text
    file with one path per line (blank lines and ``#`` comments skipped); or ``-``, the same
    from ``stdin``. A directory without audio files or an unreadable list is reported as a problem.
    """
    expanded: list[tuple[str, str | None]] = []
    for item in items:
        if item == "-":
            expanded += expand_inputs(_list_lines(stdin or []), None)
        elif item.startswith("@") and len(item) > 1:
            try:
                lines = Path(item[1:]).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                expanded.append((item, f"cannot read the list file ({first_line(error)})"))
                continue
            expanded += expand_inputs(_list_lines(lines), stdin)
        elif Path(item).is_dir():
            found = find_audio_files(item)
            if not found:
                expanded.append(
                    (item, f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this directory")
                )
            expanded += [(str(path), None) for path in found]
        else:
            expanded.append((item, None))
    return expanded


def _list_lines(lines: Iterable[str]) -> list[str]:
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line and not line.startswith("#")]


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def pad_waveforms(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded ``[batch, samples]`` float32 and int64 lengths, as numpy (:func:`pipeline.data.batching.pad_sequences`)."""
    batch, lengths = pad_sequences([np.asarray(w, dtype=np.float32) for w in waveforms], dtype=torch.float32)
    return batch.numpy(), lengths.numpy()
