"""A tiny Fluent Speech Commands layout (CSV splits + tones), shared by the FSC preparer's tests and the
recipe tests."""

from __future__ import annotations

import csv
from pathlib import Path

from corpus_fixtures import write_tone

HEADER = ["", "path", "speakerId", "transcription", "action", "object", "location"]
SPEAKERS = ("2BqVo8kVB2Skwgyb", "4BrX8aDqK2cLZRYl")
# (split, speaker, uuid, transcription, action, object, location, seconds, sample rate, channels)
# fmt: off
ROWS = [
    ("train", 0, "0a3129c0-4474-11e9-a9a5-5dbec3b8816a", "Turn on the kitchen lights", "activate", "lights", "kitchen", 1.0, 16000, 1),
    ("train", 0, "0ee42a80-4474-11e9-a9a5-5dbec3b8816a", "Change language", "change language", "none", "none", 0.6, 16000, 1),
    ("train", 1, "1a2b3c40-4474-11e9-a9a5-5dbec3b8816a", "Switch to Chinese", "change language", "Chinese", "none", 0.8, 8000, 1),
    ("train", 1, "1f00ab10-4474-11e9-a9a5-5dbec3b8816a", "Volume down", "decrease", "volume", "none", 0.5, 16000, 2),
    ("train", 0, "1b7c8d20-4474-11e9-a9a5-5dbec3b8816a", "Chinese please", "change language", "Chinese", "none", 0.4, 16000, 1),
    ("train", 1, "1c8d9e30-4474-11e9-a9a5-5dbec3b8816a", "Language", "change language", "none", "none", 0.4, 16000, 1),
    ("valid", 0, "2c4d5e60-4474-11e9-a9a5-5dbec3b8816a", "Lights on in the kitchen", "activate", "lights", "kitchen", 0.7, 16000, 1),
    ("valid", 1, "2d9e8f70-4474-11e9-a9a5-5dbec3b8816a", "Quieter", "decrease", "volume", "none", 0.4, 16000, 1),
    ("test", 1, "3e1f2a80-4474-11e9-a9a5-5dbec3b8816a", "Set my device to Chinese", "change language", "Chinese", "none", 0.9, 16000, 1),
    ("test", 0, "3f2a3b90-4474-11e9-a9a5-5dbec3b8816a", "Change the language", "change language", "none", "none", 0.3, 16000, 1),
]
# fmt: on


def write_split_csv(path: Path, rows: list[list[str]]) -> None:
    """A split file as the release writes it: a pandas index column first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for index, row in enumerate(rows):
            writer.writerow([str(index), *row])


def make_fsc(root: Path) -> dict[str, list[list[str]]]:
    """A tiny FSC release under ``root``; returns the CSV rows (without index) per split."""
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for split, speaker, uuid, text, action, obj, location, seconds, rate, channels in ROWS:
        relative = f"wavs/speakers/{SPEAKERS[speaker]}/{uuid}.wav"
        write_tone(root / relative, seconds, rate, channels)
        splits[split].append([relative, SPEAKERS[speaker], text, action, obj, location])
    rewrite(root, splits)
    return splits


def rewrite(root: Path, splits: dict[str, list[list[str]]]) -> None:
    for split, rows in splits.items():
        write_split_csv(root / "data" / f"{split}_data.csv", rows)
