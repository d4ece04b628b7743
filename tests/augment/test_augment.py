"""pipeline.augment.augmentation: the config, SpecAugment, speed perturbation, the Augmenter."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio.functional
import yaml
from augment_fixtures import LENGTHS, padded_speech_like, seeded, tone_batch, write_noise_folder

from pipeline.augment.acoustics import speed_perturb
from pipeline.augment.augmentation import AugmentConfig, Augmenter, spec_augment
from pipeline.augment.noise import add_noise, pink_noise
from pipeline.data.audio import SAMPLE_RATE

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
    with pytest.raises(ValueError, match="white, pink, household, babble, file"):
        AugmentConfig(noise_types=("brown",))
    with pytest.raises(ValueError, match="needs noise_dir"):
        AugmentConfig(noise_types=("file",))
    with pytest.raises(ValueError, match="snr_db"):
        AugmentConfig(snr_db=(20, 0))
    with pytest.raises(ValueError, match="snr_reference must be one of mean, peak"):
        AugmentConfig(snr_reference="loudest")


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
        noise_types=("white", "pink", "household", "babble", "file"),
        snr_reference="peak",
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


def test_babble_sources_are_the_talkers_and_are_asked_for_only_by_rows_that_draw_babble():
    tones, _ = tone_batch([2000.0, 3000.0], [16000, 16000])
    batch, lengths = tone_batch([500.0, 500.0, 500.0, 500.0], [16000, 12800, 9600, 16000])
    asked = []

    def sources(row: int) -> list[torch.Tensor]:
        asked.append(row)
        return [tones[0], tones[1]]

    config = AugmentConfig(noise_prob=0.5, noise_types=("white", "babble"), snr_db=(0.0, 0.0))
    noisy, _ = Augmenter(config)(batch, lengths, seeded(3), babble_sources=sources)
    frequency = torch.fft.rfftfreq(16000, 1 / SAMPLE_RATE)
    babble_rows = []
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(noisy[row, length:] == 0)
        noise = (noisy[row] - batch[row])[:length].double()
        if noise.abs().max() == 0:
            continue  # no noise drawn
        spectrum = torch.fft.rfft(noise, n=16000).abs().pow(2)
        tonal = sum(spectrum[(frequency - f).abs() < 30].sum() for f in (2000.0, 3000.0)) / spectrum.sum()
        if tonal > 0.5:  # the two talkers, not white noise
            babble_rows.append(row)
        else:
            assert tonal < 0.05
    assert babble_rows and sorted(asked) == babble_rows  # asked once per babble row, never otherwise


ACOUSTIC_CONFIG = dict(
    tempo_prob=0.5,
    pitch_prob=0.5,
    reverb_prob=0.5,
    gain_prob=0.5,
    clip_prob=0.5,
    band_limit_prob=0.5,
    telephone_prob=0.3,
    codec_prob=0.3,
    vtlp_prob=0.5,
)


def test_acoustic_settings_round_trip_validate_and_say_when_waveforms_are_needed():
    config = AugmentConfig(**ACOUSTIC_CONFIG, reverb_rt60_s=(0.3, 0.6), pitch_semitones=(-1, 1))
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert AugmentConfig.from_dict(data) == config and data["reverb_rt60_s"] == [0.3, 0.6]
    assert config.needs_waveforms and not AugmentConfig().needs_waveforms
    assert not AugmentConfig(vtlp_prob=1.0, spec_augment=True).needs_waveforms  # both work on features
    assert AugmentConfig(gain_prob=0.1).needs_waveforms and AugmentConfig(speed_perturb=True).needs_waveforms
    with pytest.raises(ValueError, match="reverb_prob must be in"):
        AugmentConfig(reverb_prob=1.5)
    with pytest.raises(ValueError, match="reverb_rt60_s must be"):
        AugmentConfig(reverb_rt60_s=(0.8, 0.2))
    with pytest.raises(ValueError, match="clip_ratio"):
        AugmentConfig(clip_ratio=(0.5, 1.5))
    with pytest.raises(ValueError, match="band_limit_low_hz"):
        AugmentConfig(band_limit_low_hz=(100, 4000), band_limit_high_hz=(3000, 7000))


def test_augmenter_acoustics_are_reproducible_and_keep_padding_zero():
    augmenter = Augmenter(AugmentConfig(**ACOUSTIC_CONFIG))
    batch, lengths = padded_speech_like(LENGTHS * 4)
    first, first_lengths = augmenter(batch, lengths, seeded(7))
    second, second_lengths = augmenter(batch, lengths, seeded(7))
    assert torch.equal(first, second) and torch.equal(first_lengths, second_lengths)
    other, _ = augmenter(batch, lengths, seeded(8))
    assert other.shape != first.shape or not torch.equal(other, first)
    assert first.shape[1] == int(first_lengths.max())
    for row, length in enumerate(first_lengths.tolist()):
        assert torch.all(first[row, length:] == 0)
        assert (
            length == LENGTHS[row % 4]
            or abs(length - LENGTHS[row % 4] / 0.9) <= 1
            or abs(length - LENGTHS[row % 4] / 1.1) <= 1
        )  # tempo 0.9 or 1.1 changes the length, nothing else does
    assert torch.isfinite(first).all()
    features = torch.randn(len(first_lengths), 50, 80)
    features[:, 40:] = 0
    warped = augmenter.augment_features(features, torch.full((len(first_lengths),), 40), seeded(9))
    assert torch.equal(
        warped, augmenter.augment_features(features, torch.full((len(first_lengths),), 40), seeded(9))
    )
    assert not torch.equal(warped, features) and torch.all(warped[:, 40:] == 0)


def test_augment_features_with_everything_off_returns_its_input():
    features = torch.rand(4, 10, 8)
    assert Augmenter(AugmentConfig()).augment_features(features, torch.tensor([10, 9, 8, 7])) is features


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
