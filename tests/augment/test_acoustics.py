"""pipeline.augment.acoustics and pipeline.augment.conditions: RT60 and direct-to-reverberant ratio measured back,
band edges, telephone band, mu-law levels, pitch and tempo by tone frequency, VTLP on real fbank,
gain and clipping, padding kept zero, seeded reproducibility, batching-independent conditions."""

from __future__ import annotations

import math

import pytest
import torch
from augment_fixtures import padded_speech_like, seeded, tone_batch

from pipeline.augment import acoustics
from pipeline.augment.conditions import NoiseCondition, noise_conditions, noisy_waveforms
from pipeline.augment.noise import peak_frame_power
from pipeline.data.audio import SAMPLE_RATE
from pipeline.frontends.fbank import FbankConfig, FbankExtractor

LENGTHS = [16000, 9600, 12800, 4800]


def band_energy_db(output: torch.Tensor, reference: torch.Tensor, low: float, high: float) -> float:
    """Energy of ``output`` over ``reference`` in a frequency band, in dB (row-summed periodograms)."""
    frequency = torch.fft.rfftfreq(output.shape[-1], 1 / SAMPLE_RATE)
    inside = (frequency >= low) & (frequency < high)
    out = torch.fft.rfft(output.double(), dim=-1).abs().pow(2)[..., inside].sum()
    ref = torch.fft.rfft(reference.double(), dim=-1).abs().pow(2)[..., inside].sum()
    return float(10 * torch.log10(out / ref))


def peak_hz(samples: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(samples.double() * torch.hann_window(len(samples), dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * SAMPLE_RATE / len(samples)


def assert_padding_zero(waveforms: torch.Tensor, lengths) -> None:
    for row, length in enumerate(torch.as_tensor(lengths).tolist()):
        assert torch.all(waveforms[row, length:] == 0), row


def white_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    batch = 0.1 * torch.randn(len(lengths), max(lengths), generator=seeded(seed))
    lengths_tensor = torch.tensor(lengths)
    return batch * (torch.arange(batch.shape[1])[None] < lengths_tensor[:, None]), lengths_tensor


# ----------------------------------------------------------------------------- room


def test_rirs_have_the_requested_rt60_and_direct_to_reverberant_ratio():
    rt60 = torch.tensor([0.3, 0.45, 0.6, 1.0])
    ratio_db = torch.tensor([0.0, 5.0, 10.0, -3.0])
    rirs = acoustics.synthetic_rirs(rt60, ratio_db, SAMPLE_RATE, seeded(0))
    assert rirs.shape == (4, SAMPLE_RATE)  # the longest RT60 in samples
    measured = acoustics.schroeder_rt60(rirs[:, 1:])  # the reverberant tail: T30 fit
    torch.testing.assert_close(measured, rt60.double(), rtol=0.08, atol=0.0)
    assert torch.all(rirs[:, 0] == 1.0)
    direct_over_tail = 10 * torch.log10(1.0 / rirs[:, 1:].double().pow(2).sum(-1))
    torch.testing.assert_close(direct_over_tail, ratio_db.double(), atol=1e-3, rtol=0)
    assert torch.equal(rirs, acoustics.synthetic_rirs(rt60, ratio_db, SAMPLE_RATE, seeded(0)))
    assert not torch.equal(rirs, acoustics.synthetic_rirs(rt60, ratio_db, SAMPLE_RATE, seeded(1)))
    with pytest.raises(ValueError, match="rt60_s"):
        acoustics.synthetic_rirs([0.3, 0.0])


def test_reverberate_keeps_length_level_and_zero_padding():
    clean, lengths = padded_speech_like(LENGTHS)
    rirs = acoustics.synthetic_rirs([0.3, 0.4, 0.5, 0.6], 3.0, SAMPLE_RATE, seeded(2))
    wet = acoustics.reverberate(clean, lengths, rirs)
    assert wet.shape == clean.shape
    assert_padding_zero(wet, lengths)
    torch.testing.assert_close(wet.double().pow(2).sum(-1), clean.double().pow(2).sum(-1), rtol=1e-4, atol=0)
    assert not torch.allclose(wet, clean, atol=1e-2)
    impulse = torch.zeros(1, 8000)
    impulse[0, 0] = 1.0
    response = acoustics.reverberate(impulse, torch.tensor([8000]), rirs[:1])
    expected = rirs[0, :8000] / rirs[0, :8000].pow(2).sum().sqrt()
    torch.testing.assert_close(response[0], expected, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- channel


def test_band_limit_removes_energy_outside_each_rows_band():
    noise, lengths = white_batch([16000, 16000], seed=3)
    limited = acoustics.band_limit(noise, lengths, [300.0, 1000.0], [3400.0, 6000.0])
    assert band_energy_db(limited[0], noise[0], 0, 200) < -30
    assert band_energy_db(limited[0], noise[0], 3550, 8000) < -30
    assert abs(band_energy_db(limited[0], noise[0], 500, 3200)) < 0.5
    assert band_energy_db(limited[1], noise[1], 0, 850) < -30
    assert abs(band_energy_db(limited[1], noise[1], 1200, 5800)) < 0.5
    with pytest.raises(ValueError, match="low < high"):
        acoustics.band_limit(noise, lengths, 3000.0, 300.0)


def test_telephone_channel_keeps_300_to_3400_hz_and_the_padding():
    noise, lengths = white_batch(LENGTHS, seed=4)
    phone = acoustics.telephone_channel(noise, lengths)
    assert phone.shape == noise.shape
    assert_padding_zero(phone, lengths)
    row = phone[0]
    assert band_energy_db(row, noise[0], 0, 200) < -25
    assert band_energy_db(row, noise[0], 3600, 8000) < -25
    assert abs(band_energy_db(row, noise[0], 500, 3200)) < 1.0  # mu-law noise is ~35 dB down


def test_mu_law_codec_has_256_levels_and_clips_to_full_scale():
    batch, lengths = padded_speech_like(LENGTHS)
    coded = acoustics.mu_law_codec(2.0 * batch, lengths)
    assert_padding_zero(coded, lengths)
    assert coded.abs().max() <= 1.0
    valid = torch.arange(coded.shape[1])[None] < lengths[:, None]
    assert len(torch.unique(coded[valid])) <= 256
    quiet = acoustics.mu_law_codec(batch, lengths)
    error = (quiet - batch).double().pow(2).sum() / batch.double().pow(2).sum()
    assert 10 * math.log10(1 / error) > 25  # 8-bit mu-law: ~38 dB SNR at speech levels


# ----------------------------------------------------------------------------- voice


def test_pitch_shift_moves_a_tone_by_the_semitones_and_keeps_duration():
    batch, lengths = tone_batch([1000.0, 1000.0, 1000.0], [16000, 12000, 16000])
    shifted = acoustics.pitch_shift(batch, lengths, [2.0, -3.0, 0.0])
    assert shifted.shape == batch.shape
    assert_padding_zero(shifted, lengths)
    assert peak_hz(shifted[0, 2000:14000]) == pytest.approx(1000 * 2 ** (2 / 12), rel=0.02)
    assert peak_hz(shifted[1, 2000:10000]) == pytest.approx(1000 * 2 ** (-3 / 12), rel=0.02)
    assert torch.equal(shifted[2], batch[2])


def test_change_tempo_changes_length_not_pitch():
    batch, lengths = tone_batch([800.0, 800.0, 800.0], [16000, 8000, 12000])
    faster, new_lengths = acoustics.change_tempo(batch, lengths, [1.25, 0.8, 1.0])
    assert new_lengths.tolist() == [12800, 10000, 12000]
    assert faster.shape[1] == 12800
    assert_padding_zero(faster, new_lengths)
    assert peak_hz(faster[0, 1000:11000]) == pytest.approx(800, rel=0.02)
    assert peak_hz(faster[1, 1000:9000]) == pytest.approx(800, rel=0.02)
    assert torch.equal(faster[2, :12000], batch[2, :12000])


def test_vtlp_moves_fbank_content_like_a_frequency_scaled_tone():
    config = FbankConfig()
    extractor = FbankExtractor(config)
    waveforms, lengths = tone_batch([1000.0, 1100.0], [16000, 16000])
    features, frames = extractor.extract_batch(waveforms, lengths, "cpu")
    warped = acoustics.vtlp(
        features[:1], frames[:1], [1.1], config.sample_rate, config.low_freq, config.high_freq
    )
    peak_warped = warped[0, 10:-10].mean(0).argmax()
    peak_higher_tone = features[1, 10:-10].mean(0).argmax()
    assert abs(int(peak_warped) - int(peak_higher_tone)) <= 1
    assert peak_warped > features[0, 10:-10].mean(0).argmax()
    padded = torch.nn.functional.pad(features, (0, 0, 0, 20))
    same = acoustics.vtlp(padded, frames, [1.0, 0.9])
    torch.testing.assert_close(same[0], padded[0], atol=1e-4, rtol=0)
    assert torch.all(same[:, -20:] == 0)


# ----------------------------------------------------------------------------- level


def test_gain_and_clipping():
    batch, lengths = padded_speech_like(LENGTHS)
    louder = acoustics.apply_gain(batch, torch.tensor([20 * math.log10(2.0), 0.0, -6.0, 0.0]))
    torch.testing.assert_close(louder[0], 2 * batch[0])
    assert torch.equal(louder[1], batch[1])
    clipped = acoustics.clip(batch, lengths, 0.5)
    peaks = batch.abs().amax(-1)
    torch.testing.assert_close(clipped.abs().amax(-1), 0.5 * peaks)
    assert_padding_zero(clipped, lengths)
    small = batch.abs() <= 0.5 * peaks[:, None]
    assert torch.equal(clipped[small], batch[small])


# ----------------------------------------------------------------------------- evaluation conditions


class Settings:
    snrs = (10.0, 0.0)
    noise_types = ("white",)
    snr_reference = "mean"
    noise = True
    reverb = True
    reverb_rt60_s = (0.3, 0.6)
    telephone = True


def test_conditions_are_named_and_ordered():
    names = [condition.name for condition in noise_conditions(Settings())]
    assert names == ["clean", "white_10dB", "white_0dB", "reverb_rt60_0.3-0.6", "telephone"]
    off = Settings()
    off.noise = False
    assert [condition.name for condition in noise_conditions(off)] == ["clean"]
    peak = Settings()
    peak.snr_reference, peak.noise_types = "peak", ("household", "pink")
    peak.reverb = peak.telephone = False
    assert [condition.name for condition in noise_conditions(peak)] == [
        "clean", "household_10dB_peak", "household_0dB_peak", "pink_10dB_peak", "pink_0dB_peak"
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["white", "pink", "household"])
def test_sweep_noises_hit_their_snr_and_are_seeded_per_utterance(kind):
    batch, lengths = padded_speech_like(LENGTHS)
    ids = ["a", "b", "c", "d"]
    for reference in ("mean", "peak"):
        condition = NoiseCondition(kind, 6.0, reference=reference)
        noisy = noisy_waveforms(batch, lengths, ids, condition, seed=0)
        assert_padding_zero(noisy, lengths)
        noise = noisy - batch
        for row, length in enumerate(lengths.tolist()):
            power = noise[row, :length].pow(2).mean()
            signal = peak_frame_power(batch[row : row + 1], lengths[row : row + 1])[0] if reference == "peak" \
                else batch[row, :length].pow(2).mean()  # fmt: skip
            assert 10 * torch.log10(signal / power) == pytest.approx(6.0, abs=1e-3)
        again = noisy_waveforms(batch[[1, 0]], lengths[[1, 0]], ["b", "a"], condition, seed=0)
        assert torch.allclose(again[1, : lengths[0]], noisy[0, : lengths[0]], atol=1e-6)


@pytest.mark.parametrize(
    "condition", [NoiseCondition("reverb", rt60_s=(0.3, 0.6)), NoiseCondition("telephone")]
)
def test_robustness_conditions_are_seeded_per_utterance_not_per_batch(condition):
    batch, lengths = padded_speech_like(LENGTHS)
    ids = ["a", "b", "c", "d"]
    first = noisy_waveforms(batch, lengths, ids, condition, seed=0)
    assert first.shape == batch.shape and not torch.allclose(first, batch, atol=1e-3)
    assert_padding_zero(first, lengths)
    assert torch.equal(first, noisy_waveforms(batch, lengths, ids, condition, seed=0))
    order = [2, 0, 3, 1]
    width = max(LENGTHS[i] for i in order)
    reordered = noisy_waveforms(
        batch[order, :width], lengths[order], [ids[i] for i in order], condition, seed=0
    )
    for position, row in enumerate(order):
        torch.testing.assert_close(
            reordered[position, : LENGTHS[row]], first[row, : LENGTHS[row]], atol=1e-5, rtol=0
        )
    other_seed = noisy_waveforms(batch, lengths, ids, condition, seed=1)
    assert torch.equal(other_seed, first) == (condition.noise == "telephone")  # only reverb is random


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    batch, lengths = padded_speech_like(LENGTHS)
    cuda_batch, cuda_lengths = batch.cuda(), lengths.cuda()
    rirs = acoustics.synthetic_rirs([0.3, 0.4, 0.5, 0.6], 3.0, SAMPLE_RATE, seeded(0))
    torch.testing.assert_close(
        rirs, acoustics.synthetic_rirs([0.3, 0.4, 0.5, 0.6], 3.0, SAMPLE_RATE, seeded(0), "cuda").cpu()
    )
    pairs = {
        "reverb": lambda b, n: acoustics.reverberate(b, n, rirs.to(b.device)),
        "band": lambda b, n: acoustics.band_limit(b, n, [100.0, 200.0, 300.0, 400.0], 3400.0),
        "pitch": lambda b, n: acoustics.pitch_shift(b, n, [2.0, -2.0, 1.0, 0.0]),
        "tempo": lambda b, n: acoustics.change_tempo(b, n, [1.1, 0.9, 1.0, 1.1])[0],
        "clip": lambda b, n: acoustics.clip(b, n, 0.5),
    }
    for name, effect in pairs.items():
        torch.testing.assert_close(
            effect(cuda_batch, cuda_lengths).cpu(), effect(batch, lengths), atol=2e-3, rtol=1e-3, msg=name
        )
    phone_cpu = acoustics.telephone_channel(batch, lengths)
    phone_cuda = acoustics.telephone_channel(cuda_batch, cuda_lengths).cpu()
    assert (phone_cuda - phone_cpu).abs().gt(1e-2).float().mean() < 0.01  # a level may flip at a boundary
    features = torch.randn(4, 50, 80)
    torch.testing.assert_close(
        acoustics.vtlp(features.cuda(), cuda_lengths // 400, [0.9, 1.0, 1.1, 1.05]).cpu(),
        acoustics.vtlp(features, lengths // 400, [0.9, 1.0, 1.1, 1.05]),
    )
