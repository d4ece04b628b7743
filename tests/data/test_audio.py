"""pipeline.data.audio: decoding, mono mix-down, resampling, atomic writes, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from pipeline.data.audio import SAMPLE_RATE, AudioError, audio_info, load_audio, resample, write_audio


def tone(seconds: float, rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * frequency * t).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_formats_decode_to_16k_mono(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    soundfile.write(str(path), tone(1.0, SAMPLE_RATE), SAMPLE_RATE)
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - SAMPLE_RATE) < 0.05 * SAMPLE_RATE  # mp3 adds codec padding
    assert 0.3 < np.abs(samples).max() <= 1.0
    assert abs(audio_info(path).duration - 1.0) < 0.05


def test_stereo_44k1_is_mixed_down_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    stereo = tone(0.5, 44100, channels=2)
    soundfile.write(str(path), stereo, 44100)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 22050)
    samples = load_audio(path)
    assert samples.shape == (8000,)
    expected = resample(stereo.mean(axis=1), 44100, SAMPLE_RATE)
    np.testing.assert_allclose(samples, expected, atol=1e-4)  # 16-bit quantisation
    both = load_audio(path, mono=False)
    assert both.shape == (2, 8000)


def test_8k_is_upsampled_and_keeps_the_tone(tmp_path):
    path = tmp_path / "narrow.wav"
    soundfile.write(str(path), tone(1.0, 8000, frequency=1000.0), 8000)
    samples = load_audio(path)
    assert samples.shape == (SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(samples)
    assert abs(peak_hz - 1000.0) < 5
    assert load_audio(path, sample_rate=None).shape == (8000,)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav: audio file not found"):
        load_audio(missing)
    with pytest.raises(AudioError, match="not found"):
        audio_info(missing)


def test_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not a RIFF header" * 10)
    with pytest.raises(AudioError, match=r"garbage.wav: cannot read audio") as caught:
        load_audio(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(AudioError, match="cannot read audio"):
        audio_info(path)


def test_empty_and_nan_audio_are_rejected(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="empty"):
        audio_info(empty)
    nan = tmp_path / "nan.wav"
    samples = tone(0.1, SAMPLE_RATE)
    samples[10] = np.nan
    soundfile.write(str(nan), samples, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(nan)


def test_write_audio_is_16_bit_atomic_and_clipped(tmp_path):
    path = tmp_path / "sub" / "out.wav"
    write_audio(path, np.array([0.0, 0.5, 2.0, -3.0], np.float32))
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(path), [0.0, 0.5, 1.0, -1.0], atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]
