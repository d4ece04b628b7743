"""Datasets, the one length-bucketing batcher, and the one padding helper.

Audio is decoded in DataLoader workers (:class:`WaveformDataset`); a file that cannot be used
comes back as an item with an ``error`` instead of raising, so one bad file never kills a long
job: the consumer decides whether to skip it or stop.

- :func:`pad_sequences`: variable-length tensors, arrays or id lists -> one padded batch and
  its lengths (waveforms, features, token ids, CTC targets: every padding in slukd);
- :func:`batches_by_duration`: sort by length and cut batches under a padded-size budget
  (feature extraction, evaluation, inference); :class:`LengthBucketSampler` adds the per-epoch
  jittered shuffle and the DDP split on top of it (training);
- :class:`UtteranceDataset`, :class:`Example`, :class:`Batch`, :func:`collate`: labelled
  utterances for training, with raw features from a store or waveforms for on-the-fly features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pipeline.core.errors import SlukdError
from pipeline.data.audio import SAMPLE_RATE, AudioError, read_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest
from pipeline.data.text import normalize_transcript
from pipeline.data.vad import trim_silence as trim_to_speech

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100  # length unit of on-the-fly utterances for batching (10 ms frames)


class DataError(SlukdError):
    """Training data that cannot be used (missing features, an unreadable file)."""


def pad_sequences(
    sequences: Sequence[Tensor | np.ndarray | Sequence[int]],
    padding_value: float = 0.0,
    dtype: torch.dtype | None = None,
    min_length: int = 0,
) -> tuple[Tensor, Tensor]:
    """Stack sequences ``[length, *rest]`` into one padded ``[batch, longest, *rest]`` tensor.

    Args:
        sequences: tensors, numpy arrays or lists of ints (token ids); all with the same ``rest``.
        padding_value: what fills the positions past each sequence's end.
        dtype: of the result (default: the first sequence's; float32 for an empty batch).
        min_length: the padded length is at least this (e.g. 1, for CTC targets of empty texts).

    Returns:
        ``padded`` and ``lengths`` (int64 ``[batch]``).
    """
    tensors = [torch.as_tensor(sequence) for sequence in sequences]
    lengths = torch.tensor([tensor.shape[0] for tensor in tensors], dtype=torch.int64)
    if not tensors:
        return torch.zeros(0, min_length, dtype=dtype or torch.float32), lengths
    width = max(min_length, int(lengths.max()))
    padded = torch.full((len(tensors), width, *tensors[0].shape[1:]), padding_value,
                        dtype=dtype or tensors[0].dtype)  # fmt: skip
    for row, tensor in enumerate(tensors):
        padded[row, : tensor.shape[0]] = tensor
    return padded, lengths


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
    """Manifest utterances as 16 kHz mono waveforms; problems become ``error`` strings.

    With ``trim_silence``, leading and trailing non-speech is cut (:func:`pipeline.data.vad.trim_silence`):
    the one place training, feature extraction and evaluation do it, as inference does for a
    model trained so (``trim_silence`` in its config.json).
    """

    def __init__(
        self, manifest: Manifest, sample_rate: int = SAMPLE_RATE, trim_silence: bool = False
    ) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.trim_silence = trim_silence

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
        if self.trim_silence:
            trimmed = trim_to_speech(samples, self.sample_rate)
            notes += ["trimmed to its speech"] if len(trimmed) < len(samples) else []
            samples = np.ascontiguousarray(trimmed)
        return WaveformItem(index, torch.from_numpy(samples), "", "; ".join(notes))


def trim_batch(waveforms: Tensor, lengths: Tensor, sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, Tensor]:
    """Each row of a padded batch cut to its speech (:func:`pipeline.data.vad.trim_silence`, as
    :class:`WaveformDataset` and prediction trim), padded again: for audio that is only complete
    after the dataset (an evaluation's noise mixed into a file, as a recording brings it)."""
    rows = [
        torch.from_numpy(np.ascontiguousarray(trim_to_speech(row[:length].numpy(), sample_rate)))
        for row, length in zip(waveforms.float().cpu(), lengths.tolist(), strict=True)
    ]
    return pad_sequences(rows, dtype=torch.float32)


def collate_waveforms(items: list[WaveformItem]) -> WaveformBatch:
    """Zero-pad a list of items into one batch (items with errors get length 0)."""
    waveforms, lengths = pad_sequences([item.waveform for item in items], dtype=torch.float32)
    return WaveformBatch(
        [item.index for item in items],
        waveforms,
        lengths,
        [item.error for item in items],
        [item.note for item in items],
    )


def batches_by_duration(
    durations: Sequence[float],
    max_padded_seconds: float,
    max_batch_size: int = 0,
    jitter: np.ndarray | None = None,
) -> list[list[int]]:
    """Sort utterances by length and cut batches whose padded size stays under a budget.

    The padded size of a batch is ``len(batch) * longest``; sorting keeps padding low. The
    order is deterministic (length, then position), so every run and every rank sees the same
    batches. Lengths may be in any unit (seconds, frames, samples) as long as the budget is too.

    Args:
        durations: length per utterance, in manifest order.
        max_padded_seconds: budget per batch (one utterance longer than it is a batch alone).
        max_batch_size: cap on utterances per batch (0: none).
        jitter: relative noise per utterance for the sort key only (``length * (1 + jitter)``),
            so that batches differ from epoch to epoch; ``None``: exact length order.

    Returns:
        Batches of indices, shortest first.
    """
    lengths = np.asarray(durations, dtype=np.float64)
    keys = lengths if jitter is None else lengths * (1 + jitter)
    order = np.lexsort((np.arange(len(lengths)), keys))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for index in order.tolist():
        longest_next = max(longest, lengths[index])
        full = max_batch_size and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * longest_next > max_padded_seconds):
            batches.append(current)
            current, longest_next = [], lengths[index]
        current.append(index)
        longest = longest_next
    if current:
        batches.append(current)
    return batches


class LengthBucketSampler:
    """Length-bucketed batches capped by padded length, reshuffled per epoch from (seed, epoch).

    Utterances are sorted by length with a little random jitter (:func:`batches_by_duration`),
    and the batch order is shuffled. Under DDP every rank gets the same number of batches (a
    few are dropped so the count divides evenly). A resumed run that calls
    :meth:`set_epoch` sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, lengths: Sequence[int], max_padded: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        self.lengths = np.asarray(lengths)
        self.max_padded = max_padded
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        jitter = rng.uniform(0, 0.1, len(self.lengths)) if self.shuffle else None
        batches = batches_by_duration(self.lengths, self.max_padded, jitter=jitter)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[:usable][self.rank :: self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class FeatureSource(Protocol):
    """What :class:`UtteranceDataset` needs of a feature store (:class:`pipeline.frontends.feature_store.FeatureStore`)."""

    folder: object

    def __contains__(self, utterance_id: object) -> bool: ...

    def frame_count(self, utterance_id: str) -> int: ...

    def features(self, utterance_id: str) -> Tensor: ...


class Example(NamedTuple):
    id: str
    target: int
    transcript: str  # normalised
    features: Tensor | None  # [frames, feature_dim], raw (store path)
    waveform: Tensor | None  # [samples] (on-the-fly path)
    slot_targets: tuple[int, ...] = ()  # class id per slot head (LabelSet.slot_targets), map order


class Batch(NamedTuple):
    ids: list[str]
    targets: Tensor  # [batch]
    transcripts: list[str]
    features: Tensor | None  # [batch, frames, feature_dim], raw, zero-padded
    feature_lengths: Tensor | None
    waveforms: Tensor | None  # [batch, samples]
    waveform_lengths: Tensor | None
    slot_targets: Tensor | None = None  # [batch, slots] class ids; None when the labels have no slots


class UtteranceDataset(Dataset):
    """Manifest utterances with their label id, and raw features from a store or waveforms."""

    def __init__(self, manifest: Manifest, labels: LabelSet, store: FeatureSource | None,
                 trim_silence: bool = False) -> None:  # fmt: skip
        self.manifest = manifest
        self.targets = [labels.index(u.intent) for u in manifest]
        self.slot_targets = [tuple(labels.slot_targets(u.slots)) for u in manifest]
        self.transcripts = [normalize_transcript(u.transcript) for u in manifest]
        self.store = store
        self.waveforms = None if store is not None else WaveformDataset(manifest, trim_silence=trim_silence)
        if store is not None:
            missing = [u.id for u in manifest if u.id not in store]
            if missing:
                raise DataError(
                    f"{store.folder}: no features for {len(missing)} utterance(s) of {manifest.path}, "
                    f"first {missing[0]!r} (skipped at extraction, or another manifest)"
                )

    def __len__(self) -> int:
        return len(self.manifest)

    def frames(self, index: int) -> int:
        """Length for batching: stored frames, or 10 ms frames of the duration on the fly."""
        if self.store is not None:
            return self.store.frame_count(self.manifest[index].id)
        return int(self.manifest[index].duration * FRAMES_PER_SECOND)

    def __getitem__(self, index: int) -> Example:
        utterance = self.manifest[index]
        if self.store is not None:
            features = self.store.features(utterance.id)
            return Example(utterance.id, self.targets[index], self.transcripts[index], features, None,
                           self.slot_targets[index])  # fmt: skip
        item = self.waveforms[index]
        if item.error:
            raise DataError(item.error)
        return Example(utterance.id, self.targets[index], self.transcripts[index], None, item.waveform,
                       self.slot_targets[index])  # fmt: skip


def collate(examples: list[Example]) -> Batch:
    """Pad a list of examples into a :class:`Batch` (features or waveforms, whichever they carry)."""
    features = feature_lengths = waveforms = waveform_lengths = None
    if examples[0].features is not None:
        features, feature_lengths = pad_sequences([e.features for e in examples], dtype=torch.float32)
    else:
        waveforms, waveform_lengths = pad_sequences([e.waveform for e in examples], dtype=torch.float32)
    return Batch(
        [e.id for e in examples],
        torch.tensor([e.target for e in examples]),
        [e.transcript for e in examples],
        features,
        feature_lengths,
        waveforms,
        waveform_lengths,
        torch.tensor([e.slot_targets for e in examples], dtype=torch.int64)
        if examples[0].slot_targets
        else None,
    )
