"""pipeline.data.batching: waveform items with errors instead of exceptions, collation, padding, length batching."""

from __future__ import annotations

import numpy as np
import soundfile
import torch

from pipeline.data.batching import (
    LengthBucketSampler,
    WaveformDataset,
    batches_by_duration,
    collate_waveforms,
    pad_sequences,
)
from pipeline.data.manifest import Manifest, Utterance


def test_items_report_problems_instead_of_raising(tmp_path):
    soundfile.write(str(tmp_path / "ok.wav"), np.full(1600, 0.1, np.float32), 16000)
    soundfile.write(str(tmp_path / "st.wav"), np.full((800, 2), 0.1, np.float32), 8000)
    soundfile.write(str(tmp_path / "zero.wav"), np.zeros(1600, np.float32), 16000)
    names = ["ok.wav", "st.wav", "zero.wav", "gone.wav"]
    manifest = Manifest([Utterance(n, n, 0.1, 16000, "t", "i") for n in names], tmp_path / "m.jsonl")
    items = [WaveformDataset(manifest)[i] for i in range(4)]
    assert items[0].error == "" and items[0].waveform.shape == (1600,) and items[0].note == ""
    assert items[1].waveform.shape == (1600,)
    assert items[1].note == "mixed 2 channels down to mono; resampled 8000 Hz to 16000 Hz"
    assert "silent" in items[2].error and "not found" in items[3].error
    batch = collate_waveforms(items)
    assert batch.waveforms.shape == (4, 1600) and batch.lengths.tolist() == [1600, 1600, 0, 0]
    assert torch.all(batch.waveforms[2:] == 0) and batch.indices == [0, 1, 2, 3]


def test_batches_by_duration_sorts_and_respects_the_budget():
    durations = [3.0, 1.0, 2.0, 1.0, 10.0, 0.5]
    batches = batches_by_duration(durations, max_padded_seconds=4.0)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(6))
    assert [durations[i] for i in flat] == sorted(durations)
    for batch in batches:
        assert len(batch) * max(durations[i] for i in batch) <= 4.0 or len(batch) == 1
    assert batches[-1] == [4]  # longer than the budget: a batch of its own
    assert batches_by_duration(durations, 100.0, max_batch_size=2)[0] == [5, 1]


def test_pad_sequences_for_waveforms_features_and_token_ids():
    padded, lengths = pad_sequences([torch.ones(3, 2), torch.ones(1, 2)])
    assert padded.shape == (2, 3, 2) and lengths.tolist() == [3, 1] and padded[1, 1:].sum() == 0
    ids, lengths = pad_sequences([[5, 6], [7], []], padding_value=-1, dtype=torch.long, min_length=1)
    assert ids.tolist() == [[5, 6], [7, -1], [-1, -1]] and lengths.tolist() == [2, 1, 0]
    arrays, _ = pad_sequences([np.arange(3, dtype=np.float32)], dtype=torch.float32)
    assert arrays.tolist() == [[0.0, 1.0, 2.0]]
    empty, lengths = pad_sequences([])
    assert empty.shape == (0, 0) and lengths.numel() == 0


def test_length_bucket_sampler_reshuffles_per_epoch_and_splits_ranks():
    lengths = [int(x) for x in np.random.default_rng(0).integers(50, 500, 200)]
    sampler = LengthBucketSampler(lengths, max_padded=2000, seed=3)
    sampler.set_epoch(1)
    first = sampler.batches()
    assert sorted(i for batch in first for i in batch) == list(range(200))
    for batch in first:
        assert len(batch) * max(lengths[i] for i in batch) <= 2000 or len(batch) == 1
    sampler.set_epoch(2)
    assert sampler.batches() != first
    sampler.set_epoch(1)
    assert sampler.batches() == first  # (seed, epoch) decides: a resumed run sees the same batches
    ranks = [LengthBucketSampler(lengths, 2000, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not set(map(tuple, ranks[0])) & set(map(tuple, ranks[1]))
    ordered = LengthBucketSampler(lengths, 2000, shuffle=False).batches()
    assert ordered == batches_by_duration(lengths, 2000)  # without shuffling: the one plain batcher
