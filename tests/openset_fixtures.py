"""Signals for the no-speech, trimming and segmentation tests: espeak speech, noise of three
colours, mains hum, clicks, and long recordings with known speech boundaries."""

from __future__ import annotations

import numpy as np

from pipeline.data.audio import SAMPLE_RATE, resample

_ENGINE = None


def espeak_speech(text: str, voice: str = "en-us", rate: int = 170, pitch: int = 50) -> np.ndarray:
    """espeak-ng reading ``text`` at 16 kHz (float32), trimmed to its first and last sample above
    1% of its peak, so the clip's boundaries are the speech's."""
    from data_prep.synthetic.engines import EspeakEngine
    from data_prep.synthetic.speakers import Speaker

    global _ENGINE
    _ENGINE = _ENGINE or EspeakEngine()
    samples, rate_hz = _ENGINE.synthesize(text, Speaker("espeak", voice, rate=rate, pitch=pitch))
    samples = resample(samples, rate_hz, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())
    return samples[loud[0] : loud[-1] + 1].astype(np.float32)


def piper_speech(text: str, length_scale: float = 1.0) -> np.ndarray:
    """The piper voice of the synthetic corpus reading ``text`` at 16 kHz (with its own silences)."""
    from data_prep.synthetic.engines import PiperEngine
    from data_prep.synthetic.speakers import Speaker

    global _PIPER
    _PIPER = _PIPER or PiperEngine()
    samples, rate_hz = _PIPER.synthesize(text, Speaker("piper", "joe", rate=length_scale, noise=0.667))
    return resample(samples, rate_hz, SAMPLE_RATE).astype(np.float32)


_PIPER = None


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """``samples`` scaled to this RMS level in dBFS."""
    return (samples / max(rms(samples), 1e-12) * 10 ** (dbfs / 20)).astype(np.float32)


def noise(samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    white = rng.standard_normal(samples)
    if colour == "white":
        return white.astype(np.float32)
    frequencies = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
    frequencies[0] = frequencies[1]
    shaping = {"pink": np.sqrt(frequencies), "brown": frequencies}[colour]
    shaped = np.fft.irfft(np.fft.rfft(white) / shaping, samples)
    return (shaped / rms(shaped)).astype(np.float32)


def hum(samples: int, mains_hz: float = 50.0) -> np.ndarray:
    """Unit-RMS mains hum: the fundamental and four harmonics falling as 1/k."""
    t = np.arange(samples) / SAMPLE_RATE
    signal = sum(np.sin(2 * np.pi * mains_hz * k * t) / k for k in range(1, 6))
    return (signal / rms(signal)).astype(np.float32)


def clicks(samples: int, per_second: float, rng: np.random.Generator) -> np.ndarray:
    """Three-sample clicks of amplitude 0.5 at random places."""
    signal = np.zeros(samples, dtype=np.float32)
    for place in rng.integers(0, samples - 3, int(per_second * samples / SAMPLE_RATE)):
        signal[place : place + 3] += rng.choice([-0.5, 0.5])
    return signal


def long_recording(pieces: list[tuple[str, float]], floor_dbfs: float, rng: np.random.Generator,
                   speech_dbfs: float = -25.0) -> tuple[np.ndarray, list[tuple[float, float]]]:  # fmt: skip
    """Silences and espeak utterances in a row over a pink noise floor.

    Args:
        pieces: ``("", seconds)`` for a pause, ``(text, 0)`` for speech.
        floor_dbfs: the noise floor's level.
        rng: seeds the noise.
        speech_dbfs: the speech's RMS level.

    Returns:
        the waveform and the true (start, end) seconds of each utterance.
    """
    parts, truth, position = [], [], 0
    for text, seconds in pieces:
        if text:
            clip = at_level(espeak_speech(text), speech_dbfs)
            truth.append((position / SAMPLE_RATE, (position + len(clip)) / SAMPLE_RATE))
        else:
            clip = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        parts.append(clip)
        position += len(clip)
    signal = np.concatenate(parts)
    return signal + at_level(noise(len(signal), "pink", rng), floor_dbfs), truth
