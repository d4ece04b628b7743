"""Non-speech audio, generated with numpy: what a microphone hears when nobody gives a command.

Sounds (``NON_SPEECH_SOUNDS``), each at a random level and length:

- ``silence``: a realistic noise floor (-75 to -50 dBFS, a little low-passed, with a slow drift);
- ``white``, ``pink``, ``brown``, ``blue``: noise whose power falls (or rises) with frequency;
- ``hum_50``, ``hum_60``: mains hum with odd and even harmonics over a noise floor;
- ``clicks``: a few sharp decaying clicks (keyboard, switches, a tapped table) over a floor;
- ``babble``: many talkers at once at a low level, none of them clear (made from speech the
  caller passes in: :func:`babble`).

Held out for the test split: ``pink`` and ``blue`` noise and 60 Hz hum (``HELD_OUT_SOUNDS``);
train and valid hear ``white``, ``brown`` and 50 Hz hum. Silence, clicks and babble are in
every split (babble from each split's own voices).
"""

from __future__ import annotations

import numpy as np

from pipeline.data.audio import SAMPLE_RATE

NON_SPEECH_SOUNDS = ("silence", "white", "pink", "brown", "blue", "hum_50", "hum_60", "clicks", "babble")
SEEN_SOUNDS = ("silence", "white", "brown", "hum_50", "clicks", "babble")
HELD_OUT_SOUNDS = ("silence", "pink", "blue", "hum_60", "clicks", "babble")
COLOUR_EXPONENTS = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}  # power ~ f^exponent


def decibels_to_amplitude(decibels: float) -> float:
    return float(10 ** (decibels / 20))


def scale_to_rms(samples: np.ndarray, decibels: float) -> np.ndarray:
    """``samples`` scaled to an RMS of ``decibels`` dBFS (silent input stays silent)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms == 0.0:
        return samples.astype(np.float32)
    return (samples * (decibels_to_amplitude(decibels) / rms)).astype(np.float32)


def coloured_noise(count: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum goes as ``f ** exponent`` (0 white, -1 pink, -2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequency = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    gain = np.power(np.maximum(frequency, 20.0), exponent / 2)
    gain[0] = 0.0
    noise = np.fft.irfft(spectrum * gain, n=count)
    return scale_to_rms(noise, 0.0)


def noise_floor(count: int, rng: np.random.Generator, decibels: float) -> np.ndarray:
    """A quiet, slightly coloured floor with a slow level drift, at about ``decibels`` dBFS."""
    floor = coloured_noise(count, rng.uniform(-1.2, -0.2), rng)
    drift = 1 + 0.3 * np.sin(
        2 * np.pi * rng.uniform(0.1, 0.5) * np.arange(count) / SAMPLE_RATE + rng.uniform(0, 6)
    )
    return scale_to_rms(floor * drift, decibels)


def mains_hum(count: int, frequency: float, rng: np.random.Generator) -> np.ndarray:
    """Mains hum at ``frequency`` with random harmonics (up to the 9th), unit RMS."""
    time = np.arange(count) / SAMPLE_RATE
    hum = np.zeros(count)
    for harmonic in range(1, 10):
        weight = rng.uniform(0.05, 0.6) / harmonic ** rng.uniform(0.3, 1.0)
        if harmonic == 1:
            weight = 1.0
        hum += weight * np.sin(2 * np.pi * frequency * harmonic * time + rng.uniform(0, 2 * np.pi))
    return scale_to_rms(hum, 0.0)


def clicks(count: int, rng: np.random.Generator) -> np.ndarray:
    """A few sharp, decaying clicks at random places, peak 1."""
    signal = np.zeros(count)
    for _ in range(int(rng.integers(2, 9))):
        length = int(rng.uniform(0.002, 0.02) * SAMPLE_RATE)
        start = int(rng.integers(0, max(1, count - length)))
        decay = np.exp(-np.arange(length) / (length * rng.uniform(0.1, 0.4)))
        signal[start : start + length] += rng.uniform(0.3, 1.0) * decay * rng.standard_normal(length)
    return (signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def babble(talkers: list[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``talkers`` (speech, 16 kHz) summed at random offsets, each looped to ``count`` samples
    and at unit RMS, so that no single talker stands out; unit RMS overall."""
    if not talkers:
        raise ValueError("babble needs at least one talker")
    mix = np.zeros(count)
    for speech in talkers:
        speech = scale_to_rms(speech, 0.0)
        looped = np.resize(np.roll(speech, int(rng.integers(len(speech)))), count)
        mix += looped * rng.uniform(0.7, 1.0)
    return scale_to_rms(mix, 0.0)


def non_speech(sound: str, rng: np.random.Generator, talkers: list[np.ndarray] | None = None) -> np.ndarray:
    """One clip of ``sound`` (one of :data:`NON_SPEECH_SOUNDS`), 0.8-4 s, float32 at 16 kHz.

    Args:
        talkers: speech to make ``babble`` from (at least 6 clips make a babble with no clear
            talker; fewer are used as they are).
    """
    count = int(rng.uniform(0.8, 4.0) * SAMPLE_RATE)
    floor = noise_floor(count, rng, rng.uniform(-75, -50))
    if sound == "silence":
        return floor
    if sound in COLOUR_EXPONENTS:
        signal = scale_to_rms(coloured_noise(count, COLOUR_EXPONENTS[sound], rng), rng.uniform(-50, -15))
    elif sound in ("hum_50", "hum_60"):
        signal = scale_to_rms(mains_hum(count, float(sound[-2:]), rng), rng.uniform(-45, -15))
    elif sound == "clicks":
        signal = clicks(count, rng) * decibels_to_amplitude(rng.uniform(-30, -6))
    elif sound == "babble":
        signal = scale_to_rms(babble(talkers or [], count, rng), rng.uniform(-40, -22))
    else:
        raise ValueError(f"unknown non-speech sound {sound!r}; choose from {', '.join(NON_SPEECH_SOUNDS)}")
    return np.clip(signal + floor, -1.0, 1.0).astype(np.float32)
