"""The energy speech detector: no speech in silence, noise, hum and clicks; speech found, trimmed
and segmented at known boundaries in synthesised long recordings."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from pipeline.data.audio import SAMPLE_RATE
from pipeline.data.vad import (
    DEFAULT_VAD,
    VadConfig,
    VadError,
    has_speech,
    speech_regions,
    speech_segments,
    trim_silence,
)
from tests.openset_fixtures import at_level, clicks, espeak_speech, hum, long_recording, noise, piper_speech

SECONDS = 3 * SAMPLE_RATE
TOLERANCE_S = 0.08  # a region's edge may be this far from the true speech boundary


@functools.cache
def non_speech() -> dict[str, np.ndarray]:
    """What must never count as speech: silence with a noise floor, coloured noise at several
    levels, mains hum, clicks, and a stationary noise that starts after digital silence."""
    rng = np.random.default_rng(0)
    cases = {"digital silence": np.zeros(SECONDS, np.float32)}
    for level in (-70, -50, -30, -10):
        for colour in ("white", "pink", "brown"):
            cases[f"{colour} {level} dBFS"] = at_level(noise(SECONDS, colour, rng), level)
        for mains in (50, 60):
            with_floor = hum(SECONDS, mains) + noise(SECONDS, "pink", rng) * 10**-1
            cases[f"hum {mains} Hz {level} dBFS"] = at_level(with_floor, level)
    cases["clicks over a floor"] = clicks(SECONDS, 3, rng) + at_level(noise(SECONDS, "white", rng), -60)
    cases["dense clicks"] = clicks(SECONDS, 10, rng)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    for colour in ("white", "brown"):
        cases[f"{colour} after silence"] = np.concatenate(
            [silence, at_level(noise(2 * SAMPLE_RATE, colour, rng), -30)]
        )
    cases["hum after silence"] = np.concatenate([silence, at_level(hum(2 * SAMPLE_RATE), -20)])
    return cases


@pytest.mark.parametrize("name", sorted(non_speech()))
def test_non_speech_is_not_speech(name):
    signal = non_speech()[name]
    assert not has_speech(signal, SAMPLE_RATE), (name, speech_regions(signal, SAMPLE_RATE))


@pytest.mark.parametrize("text", ["no", "stop", "turn on the lights in the kitchen"])
def test_speech_is_found_quiet_fast_and_in_noise(text):
    rng = np.random.default_rng(1)
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    for rate in (130, 250):
        speech = espeak_speech(text, rate=rate)
        for level in (-50, -20):  # quiet and loud (the speech's own RMS)
            clip = np.concatenate([pause, at_level(speech, level), pause])
            assert has_speech(clip, SAMPLE_RATE), (text, rate, level)
        clip = np.concatenate([pause, at_level(speech, -25), pause])
        for colour in ("white", "pink", "brown"):  # 10 dB SNR
            noisy = clip + at_level(noise(len(clip), colour, rng), -35)
            assert has_speech(noisy, SAMPLE_RATE), (text, rate, colour)
    assert has_speech(espeak_speech(text), SAMPLE_RATE)  # no silence around it at all


def test_piper_speech_is_found_quiet_and_in_noise():
    pytest.importorskip("piper")
    rng = np.random.default_rng(7)
    for text, length_scale in (("yes", 0.85), ("turn off the kitchen lights", 1.2)):  # fast and slow
        speech = piper_speech(text, length_scale)
        for level in (-50, -20):
            assert has_speech(at_level(speech, level), SAMPLE_RATE), (text, level)
        for colour in ("white", "pink"):  # 10 dB below the whole clip's level, its silences included
            noisy = at_level(speech, -25) + at_level(noise(len(speech), colour, rng), -35)
            assert has_speech(noisy, SAMPLE_RATE), (text, colour)


def peak_frame_snr_mix(speech: np.ndarray, noise_signal: np.ndarray, snr_db: float) -> np.ndarray:
    """Noise at ``snr_db`` below the loudest 25 ms frame of the speech (how noisy-command benchmarks
    mix: far noisier than the same SNR on the average power)."""
    frames = [np.mean(speech[i : i + 400] ** 2) for i in range(0, len(speech) - 400, 160)]
    scale = np.sqrt(max(frames) / 10 ** (snr_db / 10) / np.mean(noise_signal**2))
    return (speech + scale * noise_signal).astype(np.float32)


@pytest.mark.parametrize("snr_db", [12.0, 6.0])
def test_a_command_in_loud_noise_is_found_and_trimming_keeps_its_words(snr_db):
    # With frames active 8 dB above the noise floor (the old margin), three of these four were "no
    # speech" at 6 dB (peak-frame SNR), and at 12 dB trimming lost up to 0.35 s of quiet syllables
    rng = np.random.default_rng(4)
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    for text in ("turn off the kitchen lights", "set the hob to low"):
        speech = at_level(espeak_speech(text), -25)
        clean = np.concatenate([pause, speech, pause])
        found = speech_regions(clean, SAMPLE_RATE)
        start, end = found[0][0], found[-1][1]
        for colour in ("white", "pink"):
            noisy = peak_frame_snr_mix(clean, noise(len(clean), colour, rng), snr_db)
            regions = speech_regions(noisy, SAMPLE_RATE)
            assert regions, (text, colour, snr_db)
            lost = max(0.0, regions[0][0] - start) + max(0.0, end - regions[-1][1])
            assert lost <= 0.35, (
                text,
                colour,
                snr_db,
                lost,
            )  # 0.08-0.31 s measured; the trim adds 0.1 s back


def long_case() -> tuple[np.ndarray, list[tuple[float, float]]]:
    pieces = [("", 1.3), ("turn on the lights", 0), ("", 2.0), ("stop", 0), ("", 1.1),
              ("decrease the heat in the bedroom", 0), ("", 1.5)]  # fmt: skip
    return long_recording(pieces, floor_dbfs=-55, rng=np.random.default_rng(2))


def test_regions_match_the_utterances_of_a_long_recording():
    signal, truth = long_case()
    regions = speech_regions(signal, SAMPLE_RATE)
    assert len(regions) == len(truth), regions
    for (start, end), (true_start, true_end) in zip(regions, truth, strict=True):
        assert abs(start - true_start) <= TOLERANCE_S, (regions, truth)
        assert abs(end - true_end) <= TOLERANCE_S, (regions, truth)


def test_trim_keeps_the_speech_and_a_margin():
    rng = np.random.default_rng(3)
    speech = at_level(espeak_speech("switch off the music"), -25)
    lead, tail = int(1.2 * SAMPLE_RATE), int(0.7 * SAMPLE_RATE)
    signal = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    signal = signal + at_level(noise(len(signal), "white", rng), -60)
    trimmed = trim_silence(signal, SAMPLE_RATE)
    margin = DEFAULT_VAD.trim_margin_s * SAMPLE_RATE
    assert np.shares_memory(trimmed, signal)  # a slice of the input
    kept_lead = lead - (trimmed.ctypes.data - signal.ctypes.data) // signal.itemsize
    assert abs(kept_lead - margin) <= TOLERANCE_S * SAMPLE_RATE
    assert abs(len(trimmed) - (len(speech) + 2 * margin)) <= 2 * TOLERANCE_S * SAMPLE_RATE
    noise_only = at_level(noise(SECONDS, "pink", rng), -40)
    assert trim_silence(noise_only, SAMPLE_RATE) is noise_only  # no speech: nothing is cut


def test_segments_cover_each_utterance_within_the_window():
    signal, truth = long_case()
    segments = speech_segments(signal, SAMPLE_RATE, max_seconds=30.0)
    assert len(segments) == len(truth)
    for (start, end), (true_start, true_end) in zip(segments, truth, strict=True):
        assert start <= true_start + TOLERANCE_S and end >= true_end - TOLERANCE_S
        assert true_start - start <= DEFAULT_VAD.trim_margin_s + TOLERANCE_S
    # a window shorter than the last utterance cuts it; no piece is longer than the window
    short = speech_segments(signal, SAMPLE_RATE, max_seconds=1.0)
    assert len(short) > len(truth)
    assert all(0 < end - start <= 1.0 for start, end in short)
    assert all(a[1] <= b[0] for a, b in zip(short, short[1:], strict=False))  # in order, never overlapping
    # a short pause does not split: two commands 0.3 s apart are one segment
    joined, _ = long_recording([("", 0.5), ("stop", 0), ("", 0.3), ("go", 0), ("", 0.5)], -60,
                               np.random.default_rng(4))  # fmt: skip
    assert len(speech_segments(joined, SAMPLE_RATE, 30.0)) == 1


def test_settings_round_trip_and_bad_settings():
    config = VadConfig(margin_db=6.0)
    assert VadConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # band_hz: list -> tuple
    with pytest.raises(VadError, match="band_hz"):
        VadConfig(band_hz=(3000.0, 300.0))
    with pytest.raises(VadError, match="unknown setting"):
        VadConfig.from_dict({"margin": 3})
    with pytest.raises(VadError, match="hop_s"):
        VadConfig(hop_s=0)
    with pytest.raises(VadError, match="mono"):
        speech_regions(np.zeros((2, 100), np.float32), SAMPLE_RATE)
    assert speech_regions(np.zeros(10, np.float32), SAMPLE_RATE) == []


def test_trim_batch_cuts_each_row_as_trim_silence_does():
    # the evaluation mixes noise into a whole file, then trims: each row as prediction would
    import torch

    from pipeline.data.batching import pad_sequences, trim_batch

    rng = np.random.default_rng(5)
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    rows = []
    for text in ("stop", "turn on the lights in the kitchen"):
        clip = np.concatenate([pause, at_level(espeak_speech(text), -25), pause])
        rows.append(clip + at_level(noise(len(clip), "white", rng), -50))
    waveforms, lengths = pad_sequences(
        [torch.from_numpy(r.astype(np.float32)) for r in rows], dtype=torch.float32
    )
    trimmed, trimmed_lengths = trim_batch(waveforms, lengths)
    for row, signal in enumerate(rows):
        expected = trim_silence(signal.astype(np.float32), SAMPLE_RATE)
        assert int(trimmed_lengths[row]) == len(expected) < len(signal)
        np.testing.assert_array_equal(trimmed[row, : len(expected)].numpy(), expected)
