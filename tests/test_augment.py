"""pipeline.augment: exact SNR mixing, noise colours, babble, noise bank, SpecAugment, speed."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional
import yaml

from pipeline.audio import SAMPLE_RATE, AudioError
from pipeline.augment import (
    AugmentConfig,
    Augmenter,
    NoiseBank,
    add_noise,
    babble_noise,
    pink_noise,
    spec_augment,
    speed_perturb,
    white_noise,
)

LENGTHS = [8000, 5000, 6400, 3200]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def padded_speech_like(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of tones plus a little noise, each row with its own level."""
    generator = seeded(seed)
    width = max(lengths)
    time = torch.arange(width) / SAMPLE_RATE
    batch = torch.zeros(len(lengths), width)
    for row, length in enumerate(lengths):
        tone = torch.sin(2 * math.pi * (200 + 150 * row) * time[:length])
        batch[row, :length] = (0.1 + 0.2 * row) * tone + 0.01 * torch.randn(length, generator=generator)
    return batch, torch.tensor(lengths)


def tone_batch(frequencies: list[float], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(lengths)
    time = torch.arange(width, dtype=torch.float64) / SAMPLE_RATE
    batch = torch.zeros(len(lengths), width)
    for row, (frequency, length) in enumerate(zip(frequencies, lengths, strict=True)):
        batch[row, :length] = torch.sin(2 * math.pi * frequency * time[:length]).float()
    return batch, torch.tensor(lengths)


def measured_snr_db(clean: torch.Tensor, noisy: torch.Tensor, length: int) -> float:
    signal = clean[:length].double()
    noise = noisy[:length].double() - signal
    return 10 * math.log10(signal.pow(2).sum().item() / noise.pow(2).sum().item())


def spectral_slope_db_per_decade(noise: torch.Tensor, low_hz: float = 20.0) -> float:
    """Fit of log power against log frequency of the row-averaged periodogram."""
    power = torch.fft.rfft(noise.double(), dim=-1).abs().pow(2).mean(0)
    frequency = torch.fft.rfftfreq(noise.shape[-1], 1 / SAMPLE_RATE, dtype=torch.float64)
    keep = frequency >= low_hz
    slope = np.polyfit(np.log10(frequency[keep].numpy()), 10 * np.log10(power[keep].numpy()), 1)[0]
    return float(slope)


def write_noise_folder(folder) -> None:
    """An 8 kHz mono file and a 44.1 kHz stereo file."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(str(folder / "narrow.wav"), 0.3 * rng.standard_normal(4000).astype(np.float32), 8000)
    time = np.arange(11025) / 44100
    tone = np.sin(2 * np.pi * 500 * time).astype(np.float32)
    soundfile.write(str(folder / "wide.flac"), np.stack([0.4 * tone, 0.2 * tone], axis=1), 44100)


@pytest.fixture(scope="module")
def noise_bank(tmp_path_factory) -> NoiseBank:
    folder = tmp_path_factory.mktemp("bank") / "noise"
    write_noise_folder(folder)
    return NoiseBank(folder)


# ----------------------------------------------------------------------------- config


def test_config_round_trips_through_yaml_and_rejects_bad_settings(tmp_path):
    config = AugmentConfig(
        speed_perturb=True, noise_prob=0.5, noise_types=("pink", "file"), noise_dir=tmp_path
    )
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert AugmentConfig.from_dict(data) == config
    assert (
        AugmentConfig().noise_prob == 0
        and not AugmentConfig().speed_perturb
        and not AugmentConfig().spec_augment
    )
    with pytest.raises(ValueError, match="unknown augment setting.*colour"):
        AugmentConfig.from_dict({"colour": "pink"})
    with pytest.raises(ValueError, match="white, pink, babble, file"):
        AugmentConfig(noise_types=("brown",))
    with pytest.raises(ValueError, match="needs noise_dir"):
        AugmentConfig(noise_types=("file",))
    with pytest.raises(ValueError, match="snr_db"):
        AugmentConfig(snr_db=(20, 0))


# ----------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", ["white", "pink", "babble", "file"])
def test_add_noise_hits_the_requested_snr_over_valid_samples(kind, noise_bank):
    clean, lengths = padded_speech_like(LENGTHS)
    shape = tuple(clean.shape)
    generator = seeded(1)
    noise = {
        "white": lambda: white_noise(shape, generator),
        "pink": lambda: pink_noise(shape, generator),
        "babble": lambda: babble_noise(clean, lengths, generator),
        "file": lambda: noise_bank.sample(shape[0], shape[1], generator),
    }[kind]()
    for target in (0.0, 5.0, 10.0, 20.0):
        snr = torch.full((len(LENGTHS),), target)
        noisy = add_noise(clean, lengths, snr, noise)
        for row, length in enumerate(LENGTHS):
            assert abs(measured_snr_db(clean[row], noisy[row], length) - target) < 0.5
            assert torch.all(noisy[row, length:] == 0)
    assert torch.equal(clean, padded_speech_like(LENGTHS)[0])  # inputs untouched


def test_add_noise_takes_a_per_utterance_snr_and_leaves_silent_noise_clean():
    clean, lengths = padded_speech_like(LENGTHS)
    noise = white_noise(tuple(clean.shape), seeded(2))
    noise[1] = 0.0
    noisy = add_noise(clean, lengths, torch.tensor([0.0, 5.0, 10.0, 20.0]), noise)
    assert abs(measured_snr_db(clean[0], noisy[0], LENGTHS[0]) - 0.0) < 0.5
    assert abs(measured_snr_db(clean[3], noisy[3], LENGTHS[3]) - 20.0) < 0.5
    assert torch.equal(noisy[1], clean[1])
    with pytest.raises(ValueError, match="does not match"):
        add_noise(clean, lengths, 10.0, noise[:, :100])


def test_pink_noise_falls_10_db_per_decade_and_white_noise_is_flat():
    pink = pink_noise((16, 8192), seeded(3))
    white = white_noise((16, 8192), seeded(3))
    assert -13.0 < spectral_slope_db_per_decade(pink) < -7.0
    assert abs(spectral_slope_db_per_decade(white)) < 1.5
    rms = pink.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(16))
    assert pink.mean(-1).abs().max() < 1e-4


@pytest.mark.parametrize("num_speakers", [1, 3])
def test_babble_is_built_from_the_other_utterances_only(num_speakers):
    frequencies = [500.0, 1000.0, 1500.0, 2000.0]
    lengths = [16000, 12800, 9600, 16000]  # multiples of every tone's period: seamless tiling
    batch, lengths_tensor = tone_batch(frequencies, lengths)
    babble = babble_noise(batch, lengths_tensor, seeded(4), num_speakers=num_speakers)
    for row, length in enumerate(lengths):
        assert torch.all(babble[row, length:] == 0)
        window = torch.hann_window(length, periodic=False, dtype=torch.float64)
        spectrum = torch.fft.rfft(babble[row, :length].double() * window).abs().pow(2)
        frequency = torch.fft.rfftfreq(length, 1 / SAMPLE_RATE)
        energy = [spectrum[(frequency - f).abs() < 30].sum().item() for f in frequencies]
        total = sum(energy)
        assert energy[row] < 1e-6 * total  # never the utterance itself
        present = [i for i, e in enumerate(energy) if e > 0.05 * total]
        assert row not in present and len(present) == num_speakers


def test_babble_of_a_single_utterance_falls_back_to_pink_noise(caplog):
    batch, lengths = tone_batch([500.0], [4000])
    with caplog.at_level(logging.DEBUG, logger="pipeline.augment"):
        babble = babble_noise(batch, lengths, seeded(5))
    assert "pink noise" in caplog.text
    assert babble.shape == batch.shape and babble.abs().sum() > 0


def test_noise_bank_resamples_mixes_down_and_crops(noise_bank):
    assert [path.name for path in noise_bank.files] == ["narrow.wav", "wide.flac"]
    assert noise_bank.lengths.tolist() == [8000, 4000]  # 0.5 s at 8 kHz, 0.25 s at 44.1 kHz, now 16 kHz
    wide = noise_bank.samples[8000:]
    assert abs(wide.abs().max().item() - 0.3) < 0.02  # mean of 0.4 and 0.2 channels
    crops = noise_bank.sample(5, 20000, seeded(6))
    assert crops.shape == (5, 20000) and crops.dtype == torch.float32
    assert torch.isfinite(crops).all() and (crops.pow(2).mean(-1) > 0).all()
    torch.testing.assert_close(crops, noise_bank.sample(5, 20000, seeded(6)))


def test_noise_bank_errors_name_the_folder_or_the_file(tmp_path):
    empty = tmp_path / "empty_noise"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(AudioError, match="empty_noise: noise folder holds no audio files"):
        NoiseBank(empty)
    with pytest.raises(AudioError, match="missing_noise: noise folder not found"):
        NoiseBank(tmp_path / "missing_noise")
    broken = tmp_path / "broken_noise"
    write_noise_folder(broken)
    (broken / "corrupt.wav").write_bytes(b"this is not a wav file")
    with pytest.raises(AudioError, match=r"corrupt\.wav: cannot read audio") as error:
        NoiseBank(broken)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- SpecAugment


def feature_batch(lengths: list[int], num_bins: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive features (so a zero mask is visible) with padding frames set to 7."""
    features = torch.rand(len(lengths), max(lengths), num_bins, generator=seeded(seed)) + 1.0
    for row, length in enumerate(lengths):
        features[row, length:] = 7.0
    return features, torch.tensor(lengths)


def runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean tensor."""
    padded = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).int()
    edges = padded.diff()
    starts, ends = (edges == 1).nonzero().squeeze(1), (edges == -1).nonzero().squeeze(1)
    return (ends - starts).tolist()


def test_spec_augment_masks_one_band_and_one_span_within_limits():
    lengths = [120, 80, 50, 100]
    features, lengths_tensor = feature_batch(lengths)
    original = features.clone()
    config = AugmentConfig(
        num_freq_masks=1, freq_mask_width=8, num_time_masks=1, time_mask_width=30, time_mask_ratio=0.2
    )
    seen_freq = seen_time = 0
    for seed in range(10):
        masked = spec_augment(features, lengths_tensor, config, seeded(seed))
        assert torch.equal(features, original)
        for row, length in enumerate(lengths):
            assert torch.equal(masked[row, length:], original[row, length:])  # padding untouched
            zero = masked[row, :length] == 0
            bins = zero.all(dim=0)
            frames = zero.all(dim=1)
            assert torch.equal(zero, bins[None, :] | frames[:, None])  # only whole bands and spans
            assert len(runs(bins)) <= 1 and sum(runs(bins)) <= 8
            time_limit = min(30, int(0.2 * length))
            assert len(runs(frames)) <= 1 and sum(runs(frames)) <= time_limit
            seen_freq += bool(bins.any())
            seen_time += bool(frames.any())
    assert seen_freq > 20 and seen_time > 20


def test_spec_augment_counts_widths_mean_value_and_no_masks():
    lengths = [200, 150]
    features, lengths_tensor = feature_batch(lengths, num_bins=80)
    config = AugmentConfig(num_freq_masks=2, freq_mask_width=10, num_time_masks=3, time_mask_width=15)
    masked = spec_augment(features, lengths_tensor, config, seeded(7))
    for row, length in enumerate(lengths):
        zero = masked[row, :length] == 0
        assert 1 <= len(runs(zero.all(dim=0))) <= 2 and sum(runs(zero.all(dim=0))) <= 20
        assert 1 <= len(runs(zero.all(dim=1))) <= 3 and sum(runs(zero.all(dim=1))) <= 45

    off = AugmentConfig(num_freq_masks=0, num_time_masks=0)
    assert torch.equal(spec_augment(features, lengths_tensor, off, seeded(7)), features)

    mean_config = AugmentConfig(num_freq_masks=1, freq_mask_width=10, num_time_masks=0, mask_value="mean")
    masked = spec_augment(features, lengths_tensor, mean_config, seeded(8))
    for row, length in enumerate(lengths):
        changed = masked[row, :length] != features[row, :length]
        assert changed.any()
        mean = features[row, :length].mean()
        torch.testing.assert_close(masked[row, :length][changed], mean.expand(int(changed.sum())))


def test_spec_augment_is_deterministic_per_seed():
    features, lengths = feature_batch([100, 60, 90])
    config = AugmentConfig(num_freq_masks=2, freq_mask_width=10, num_time_masks=2, time_mask_width=20)
    first = spec_augment(features, lengths, config, seeded(11))
    assert torch.equal(first, spec_augment(features, lengths, config, seeded(11)))
    assert not torch.equal(first, spec_augment(features, lengths, config, seeded(12)))


# ----------------------------------------------------------------------------- speed


def peak_hz(samples: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(samples.double() * torch.hann_window(len(samples), dtype=torch.float64))
    return spectrum.abs().argmax().item() * SAMPLE_RATE / len(samples)


def test_speed_1_1_raises_a_1khz_tone_to_1_1khz():
    batch, lengths = tone_batch([1000.0], [SAMPLE_RATE])
    fast, new_lengths = speed_perturb(batch, lengths, [1.1])
    assert new_lengths.tolist() == [math.ceil(SAMPLE_RATE / 1.1)] and fast.shape == (1, new_lengths[0])
    assert abs(peak_hz(fast[0]) - 1100.0) < 3.0


def test_speed_1_0_is_the_identity():
    batch, lengths = padded_speech_like(LENGTHS)
    same, same_lengths = speed_perturb(batch, lengths, torch.ones(len(LENGTHS)))
    assert torch.equal(same, batch) and torch.equal(same_lengths, lengths)


def test_mixed_speed_factors_get_exact_lengths_and_zero_padding():
    batch, lengths = padded_speech_like(LENGTHS)
    factors = [0.9, 1.1, 1.0, 1.1]
    perturbed, new_lengths = speed_perturb(batch, lengths, torch.tensor(factors))
    assert perturbed.shape == (len(LENGTHS), int(new_lengths.max()))
    for row, (factor, length) in enumerate(zip(factors, LENGTHS, strict=True)):
        alone = batch[row, :length]
        if factor != 1.0:
            alone = torchaudio.functional.resample(alone, round(SAMPLE_RATE * factor), SAMPLE_RATE)
        assert (
            new_lengths[row].item()
            == len(alone)
            == math.ceil(length * SAMPLE_RATE / round(SAMPLE_RATE * factor))
        )
        assert abs(len(alone) - length / factor) < 1
        torch.testing.assert_close(perturbed[row, : len(alone)], alone, atol=2e-3, rtol=0)
        assert torch.all(perturbed[row, len(alone) :] == 0)


# ----------------------------------------------------------------------------- augmenter


def test_augmenter_is_reproducible_for_a_seed(tmp_path):
    folder = tmp_path / "noise"
    write_noise_folder(folder)
    config = AugmentConfig(
        speed_perturb=True,
        noise_prob=0.8,
        noise_types=("white", "pink", "babble", "file"),
        noise_dir=folder,
        spec_augment=True,
        num_time_masks=1,
        time_mask_width=10,
    )
    augmenter = Augmenter(config)
    batch, lengths = padded_speech_like(LENGTHS * 2)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = seeded(seed)
        waveforms, new_lengths = augmenter(batch, lengths, generator)
        features = waveforms[:, : (waveforms.shape[1] // 160) * 160].reshape(len(lengths), -1, 160)
        return waveforms, new_lengths, augmenter.spec_augment(features, new_lengths // 160, generator)

    first, second, other = run(0), run(0), run(1)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert first[0].shape != other[0].shape or not torch.equal(first[0], other[0])
    waveforms, new_lengths, _ = first
    assert not torch.equal(waveforms[:, : batch.shape[1]], batch)
    for row, length in enumerate(new_lengths.tolist()):
        assert torch.all(waveforms[row, length:] == 0)


def test_augmenter_with_everything_off_returns_its_inputs():
    augmenter = Augmenter(AugmentConfig())
    batch, lengths = padded_speech_like(LENGTHS)
    waveforms, new_lengths = augmenter(batch, lengths, seeded(0))
    assert waveforms is batch and new_lengths is lengths
    features = torch.rand(4, 10, 8)
    assert augmenter.spec_augment(features, torch.tensor([10, 9, 8, 7])) is features


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_the_same_seed(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # resampling convolutions in full fp32
    clean, lengths = padded_speech_like(LENGTHS)
    noise = pink_noise(tuple(clean.shape), seeded(13))
    snr = torch.tensor([0.0, 5.0, 10.0, 20.0])
    on_cpu = add_noise(clean, lengths, snr, noise)
    on_cuda = add_noise(clean.cuda(), lengths.cuda(), snr.cuda(), noise.cuda())
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        pink_noise(tuple(clean.shape), seeded(13), "cuda").cpu(), noise, atol=1e-4, rtol=1e-4
    )

    features, feature_lengths = feature_batch([100, 60, 90])
    config = AugmentConfig(num_freq_masks=2, freq_mask_width=10, num_time_masks=2, time_mask_width=20)
    masked_cpu = spec_augment(features, feature_lengths, config, seeded(14))
    masked_cuda = spec_augment(features.cuda(), feature_lengths.cuda(), config, seeded(14))
    assert torch.equal(masked_cuda.cpu(), masked_cpu)

    augmenter = Augmenter(AugmentConfig(speed_perturb=True, noise_prob=1.0))
    waveforms, new_lengths = augmenter(clean, lengths, seeded(15))
    waveforms_cuda, new_lengths_cuda = augmenter(clean.cuda(), lengths.cuda(), seeded(15))
    assert torch.equal(new_lengths_cuda.cpu(), new_lengths)
    torch.testing.assert_close(waveforms_cuda.cpu(), waveforms, atol=1e-3, rtol=1e-3)
