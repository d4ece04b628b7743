"""Shared test helpers for augmentation, noise and acoustics: seeded generators, padded batches
of tones, SNR and spectral measurements, a small noise folder."""

from __future__ import annotations

import math

import numpy as np
import soundfile
import torch

from pipeline.data.audio import SAMPLE_RATE

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
