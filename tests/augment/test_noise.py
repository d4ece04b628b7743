"""pipeline.augment.noise: exact SNR mixing, noise colours, babble, the noise bank."""

from __future__ import annotations

import logging

import pytest
import torch
from augment_fixtures import (
    LENGTHS,
    measured_snr_db,
    padded_speech_like,
    seeded,
    spectral_slope_db_per_decade,
    tone_batch,
    write_noise_folder,
)

from pipeline.augment.noise import (
    NoiseBank,
    add_noise,
    babble_noise,
    household_noise,
    mix_talkers,
    peak_frame_power,
    pink_noise,
    white_noise,
)
from pipeline.data.audio import SAMPLE_RATE, AudioError


@pytest.fixture(scope="module")
def noise_bank(tmp_path_factory) -> NoiseBank:
    folder = tmp_path_factory.mktemp("bank") / "noise"
    write_noise_folder(folder)
    return NoiseBank(folder)


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


def test_peak_reference_takes_the_loudest_frame_so_a_quiet_lead_in_changes_nothing():
    # a command in a longer recording: half a second of near silence, then the words
    speech = white_noise((1, 8000), seeded(3)) * torch.linspace(0.2, 1.0, 8000)
    recording = torch.cat([1e-3 * white_noise((1, 8000), seeded(4)), speech], dim=1)
    lengths = torch.tensor([16000])
    noise = white_noise((1, 16000), seeded(5))
    peak = add_noise(recording, lengths, 6.0, noise, reference="peak") - recording
    frame = recording[0, -400:].pow(2).mean()  # the loudest 25 ms is at the end
    assert peak_frame_power(recording, lengths)[0] == pytest.approx(float(frame), rel=0.05)
    snr = 10 * torch.log10(peak_frame_power(recording, lengths)[0] / peak.pow(2).mean())
    assert snr == pytest.approx(6.0, abs=1e-3)
    mean = add_noise(recording, lengths, 6.0, noise) - recording
    # the same dB on the mean power, diluted by the lead-in, is much quieter noise
    assert 10 * torch.log10(peak.pow(2).mean() / mean.pow(2).mean()) > 5.0
    with pytest.raises(ValueError, match="SNR reference"):
        add_noise(recording, lengths, 6.0, noise, reference="median")


def test_household_noise_is_seeded_unit_rms_and_not_stationary():
    first = household_noise((6, 3 * SAMPLE_RATE), seeded(7))
    assert torch.equal(first, household_noise((6, 3 * SAMPLE_RATE), seeded(7)))
    assert not torch.equal(first, household_noise((6, 3 * SAMPLE_RATE), seeded(8)))
    assert torch.allclose(first.pow(2).mean(1), torch.ones(6), atol=1e-4)

    # clatter and a drifting level: 25 ms frame energies spread far wider than white noise's
    def spread_db(noise):
        frames = noise.unfold(1, 400, 400).pow(2).mean(-1)
        decibels = 10 * torch.log10(frames.clamp_min(1e-12))
        return (decibels.quantile(0.95, dim=1) - decibels.quantile(0.05, dim=1)).median()

    assert spread_db(first) > 3 * spread_db(white_noise((6, 3 * SAMPLE_RATE), seeded(7)))
    assert household_noise((2, 100), seeded(1)).shape == (2, 100)  # shorter than a knock


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
    with caplog.at_level(logging.DEBUG, logger="pipeline.augment.noise"):
        babble = babble_noise(batch, lengths, seeded(5))
    assert "pink noise" in caplog.text
    assert babble.shape == batch.shape and babble.abs().sum() > 0


def test_mix_talkers_sums_each_talker_at_unit_rms_and_tiles_it():
    frequencies = [500.0, 1500.0]
    batch, lengths = tone_batch(frequencies, [3200, 1600])  # whole periods: seamless tiling
    talkers = [batch[0, :3200] * 7.0, batch[1, :1600] * 0.01]  # levels the mix must undo
    babble = mix_talkers(talkers, 8000, seeded(6))
    assert babble.shape == (8000,)
    spectrum = torch.fft.rfft(babble.double() * torch.hann_window(8000, dtype=torch.float64)).abs().pow(2)
    frequency = torch.fft.rfftfreq(8000, 1 / SAMPLE_RATE)
    energy = [spectrum[(frequency - f).abs() < 30].sum().item() for f in frequencies]
    assert energy[0] == pytest.approx(energy[1], rel=0.1)  # both at unit RMS, whatever their level
    assert float(babble.pow(2).mean()) == pytest.approx(2.0, rel=0.1)  # two uncorrelated unit talkers
    assert torch.equal(babble, mix_talkers(talkers, 8000, seeded(6)))  # seeded offsets
    assert not torch.equal(babble, mix_talkers(talkers, 8000, seeded(7)))
    assert torch.equal(mix_talkers([], 100), torch.zeros(100))


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
