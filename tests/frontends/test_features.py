"""pipeline.frontends.fbank: batched fbank = one-at-a-time fbank = Kaldi's, exact frame counts."""

from __future__ import annotations

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from pipeline.core.devices import resolve_device
from pipeline.frontends.fbank import FbankConfig, FbankExtractor, extract_batch, frame_counts


def random_batch(seed: int, batch: int = 6, max_samples: int = 24000):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(300, max_samples, (batch,), generator=generator)
    lengths[0] = max_samples  # one utterance fills the batch
    waveforms = torch.zeros(batch, max_samples)
    for row, length in enumerate(lengths):
        waveforms[row, :length] = 0.1 * torch.randn(int(length), generator=generator)
    # Loud padding would leak into the frames if the extractor read past an utterance's end.
    padded = waveforms.clone()
    for row, length in enumerate(lengths):
        padded[row, length:] = 0.9
    return waveforms, padded, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_equals_single_and_padding_never_leaks(seed):
    extractor = FbankExtractor()
    clean, padded, lengths = random_batch(seed)
    features, counts = extractor.extract_batch(padded, lengths)
    assert counts.tolist() == frame_counts(lengths, extractor.config).tolist()
    assert features.shape == (len(lengths), int(counts.max()), 80)
    for row, length in enumerate(lengths):
        single = extractor.extract(clean[row, :length])
        assert single.shape == (int(counts[row]), 80)
        torch.testing.assert_close(features[row, : counts[row]], single, atol=1e-4, rtol=1e-5)
        assert torch.all(features[row, counts[row] :] == 0)


def test_matches_torchaudio_kaldi_fbank():
    _, _, lengths = random_batch(3)
    clean, _, _ = random_batch(3)
    config = FbankConfig()
    features, counts = extract_batch(clean, lengths, "cpu", config)
    for row, length in enumerate(lengths):
        if length < config.window_size:
            continue
        reference = kaldi.fbank(clean[row : row + 1, :length] * 32768, num_mel_bins=80, dither=0.0)
        assert reference.shape[0] == counts[row]
        torch.testing.assert_close(features[row, : counts[row]], reference, atol=2e-3, rtol=1e-4)


def test_frame_counts_are_exact():
    config = FbankConfig()
    lengths = torch.tensor([0, 399, 400, 559, 560, 16000, 16001])
    assert frame_counts(lengths, config).tolist() == [0, 0, 1, 1, 2, 98, 98]
    for length in (400, 560, 16000, 16001):
        assert kaldi.fbank(torch.randn(1, length)).shape[0] == frame_counts(torch.tensor([length]), config)[0]


def test_other_settings_and_errors():
    config = FbankConfig(num_mel_bins=40, window="hamming", frame_shift_ms=20.0)
    waveform = 0.1 * torch.randn(16000)
    features = FbankExtractor(config).extract(waveform)
    assert features.shape == (49, 40)
    reference = kaldi.fbank(
        waveform[None] * 32768, num_mel_bins=40, window_type="hamming", frame_shift=20.0, dither=0.0
    )
    torch.testing.assert_close(features, reference, atol=2e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="window must be one of"):
        FbankConfig(window="kaiser")
    with pytest.raises(ValueError, match="low_freq"):
        FbankConfig(low_freq=9000.0)
    with pytest.raises(ValueError, match="expected waveforms"):
        FbankExtractor().extract_batch(torch.zeros(3), torch.tensor([3]))


def test_short_input_gives_no_frames():
    features, counts = FbankExtractor().extract_batch(torch.zeros(2, 100), torch.tensor([100, 50]))
    assert features.shape == (2, 0, 80) and counts.tolist() == [0, 0]


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    clean, padded, lengths = random_batch(4)
    extractor = FbankExtractor()
    cpu, cpu_counts = extractor.extract_batch(padded, lengths, "cpu")
    gpu, gpu_counts = extractor.extract_batch(padded, lengths, "cuda")
    assert gpu_counts.cpu().tolist() == cpu_counts.tolist()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=5e-3, rtol=1e-3)
