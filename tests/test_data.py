"""pipeline.data: waveform items with errors instead of exceptions, collation, length batching."""

from __future__ import annotations

import numpy as np
import soundfile
import torch

from pipeline.data import WaveformDataset, batches_by_duration, collate_waveforms
from pipeline.manifest import Manifest, Utterance


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
