"""Datasets, length-sorted batching and collation into typed batches.

Audio is decoded in DataLoader workers (:class:`WaveformDataset`); a file that cannot be used
comes back as an item with an ``error`` instead of raising, so one bad file never kills a long
job: the consumer decides whether to skip it or stop.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pipeline.audio import SAMPLE_RATE, AudioError, read_audio
from pipeline.manifest import Manifest

logger = logging.getLogger(__name__)


class WaveformItem(NamedTuple):
    index: int  # position in the manifest
    waveform: Tensor  # [samples] float32, 16 kHz mono; empty when error is set
    error: str  # "" when the audio is usable
    note: str  # what was done to the file on the way (resampled, mixed down), or ""


class WaveformBatch(NamedTuple):
    indices: list[int]
    waveforms: Tensor  # [batch, max_samples], zero-padded
    lengths: Tensor  # [batch] int64
    errors: list[str]
    notes: list[str]


class WaveformDataset(Dataset):
    """Manifest utterances as 16 kHz mono waveforms; problems become ``error`` strings."""

    def __init__(self, manifest: Manifest, sample_rate: int = SAMPLE_RATE) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> WaveformItem:
        utterance = self.manifest[index]
        path = self.manifest.audio_path(utterance)
        empty = torch.zeros(0)
        try:
            samples, info = read_audio(path, sample_rate=self.sample_rate)
        except AudioError as error:
            return WaveformItem(index, empty, str(error), "")
        if not np.any(samples):
            return WaveformItem(index, empty, f"{path}: audio is silent (every sample is zero)", "")
        notes = []
        if info.channels > 1:
            notes.append(f"mixed {info.channels} channels down to mono")
        if info.sample_rate != self.sample_rate:
            notes.append(f"resampled {info.sample_rate} Hz to {self.sample_rate} Hz")
        return WaveformItem(index, torch.from_numpy(samples), "", "; ".join(notes))


def collate_waveforms(items: list[WaveformItem]) -> WaveformBatch:
    """Zero-pad a list of items into one batch (items with errors get length 0)."""
    lengths = torch.tensor([item.waveform.numel() for item in items], dtype=torch.int64)
    waveforms = torch.zeros(len(items), int(lengths.max()) if len(items) else 0)
    for row, item in enumerate(items):
        waveforms[row, : item.waveform.numel()] = item.waveform
    return WaveformBatch(
        [item.index for item in items],
        waveforms,
        lengths,
        [item.error for item in items],
        [item.note for item in items],
    )


def batches_by_duration(
    durations: list[float], max_padded_seconds: float, max_batch_size: int = 0
) -> list[list[int]]:
    """Sort utterances by duration and cut batches whose padded size stays under a budget.

    The padded size of a batch is ``len(batch) * longest``; sorting keeps padding low. The
    order is deterministic (duration, then manifest position), so every run and every rank
    sees the same batches.

    Args:
        durations: seconds per utterance, in manifest order.
        max_padded_seconds: budget per batch (one utterance longer than it is a batch alone).
        max_batch_size: cap on utterances per batch (0: none).

    Returns:
        Batches of manifest indices, shortest first.
    """
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = durations[index]  # ascending order: the newcomer is the longest
        full = max_batch_size and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * longest > max_padded_seconds):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
