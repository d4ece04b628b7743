"""Noise for augmentation and evaluation, on padded batches on any device.

The one home of noise generation: training augmentation (:mod:`pipeline.augment.augmentation`) and the
evaluation's robustness conditions (:mod:`pipeline.augment.conditions`) both draw from here.

- :func:`white_noise`, :func:`pink_noise` (1/f), :func:`household_noise` (a synthetic room of
  household sounds: a drifting coloured bed, a motor's hum, clatter), :func:`babble_noise` (other
  utterances of the batch), :func:`mix_talkers` (babble of given talkers) and :class:`NoiseBank` (random crops of a folder of the user's noise
  recordings);
- :func:`add_noise`: mixing at an exact per-utterance SNR over each utterance's own samples, the
  signal's power taken as its mean (``reference="mean"``) or, as noisy-command benchmarks mix, as
  its loudest 25 ms frame (``reference="peak"``: far noisier at the same number of dB).

Random numbers come from an optional ``torch.Generator`` and are drawn on the generator's own
device (:func:`random_uniform`), so a seed means the same numbers for CPU and CUDA data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from pipeline.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, AudioError, load_audio

logger = logging.getLogger(__name__)

NOISE_TYPES = ("white", "pink", "household", "babble", "file")
SNR_REFERENCES = ("mean", "peak")  # the signal power an SNR is measured against
PEAK_FRAME_S = 0.025  # frames of the peak reference: 25 ms, hop 10 ms
PEAK_HOP_S = 0.010


# ----------------------------------------------------------------------------- random draws


def draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where to draw: the generator's own device, so that a seed means the same numbers anywhere."""
    if generator is not None:
        return generator.device
    return torch.device("cpu") if device is None else torch.device(device)


def random_uniform(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """Uniform draws in [0, 1) of ``shape``, drawn on the generator's device, returned on ``device``."""
    draws = torch.rand(tuple(shape), generator=generator, device=draw_device(generator, device))
    return draws.to(device)


def valid_mask(lengths: Tensor, size: int, device: torch.device) -> Tensor:
    """``[B, size]`` boolean: True on the first ``lengths[b]`` positions of each row."""
    lengths = torch.as_tensor(lengths, device=device).long()
    return torch.arange(size, device=device)[None, :] < lengths[:, None]


def random_between(
    bounds: tuple[float, float],
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    """``[B]`` float64 draws uniform in ``bounds`` (low, high), on ``device``."""
    low, high = bounds
    return low + (high - low) * random_uniform((batch_size,), generator, device).double()


# ----------------------------------------------------------------------------- noise


def white_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian white noise with unit variance.

    Args:
        shape: output shape, samples last (``[B, S]``).
        generator: source of randomness; ``None`` uses torch's global one.
        device: where the result lives (default CPU).

    Returns:
        float32 noise of ``shape``.
    """
    draws = torch.randn(tuple(shape), generator=generator, device=draw_device(generator, device))
    return draws.to(device)


def pink_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Pink (1/f) noise: white noise shaped in the frequency domain, -10 dB per decade.

    Args:
        shape: output shape, samples last (``[B, S]``).
        generator: source of randomness; ``None`` uses torch's global one.
        device: where the result lives (default CPU).

    Returns:
        float32 noise of ``shape`` with zero mean and unit RMS along the last axis.
    """
    white = white_noise(shape, generator, device)
    num_samples = white.shape[-1]
    spectrum = torch.fft.rfft(white, dim=-1)
    frequency = torch.arange(spectrum.shape[-1], device=white.device, dtype=white.dtype)
    amplitude = frequency.clamp_min(1.0).rsqrt()  # power ~ 1/f
    amplitude[0] = 0.0  # no DC
    pink = torch.fft.irfft(spectrum * amplitude, n=num_samples, dim=-1)
    rms = pink.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return pink / rms.clamp_min(torch.finfo(pink.dtype).tiny)


def _shaped_noise(white: Tensor, exponent: Tensor) -> Tensor:
    """White noise ``[B, S]`` shaped to power ~ 1/f**exponent (one exponent per row), unit RMS."""
    spectrum = torch.fft.rfft(white, dim=-1)
    frequency = torch.arange(spectrum.shape[-1], device=white.device, dtype=white.dtype).clamp_min(1.0)
    amplitude = frequency[None, :].pow(-exponent[:, None] / 2.0)
    amplitude[:, 0] = 0.0
    shaped = torch.fft.irfft(spectrum * amplitude, n=white.shape[-1], dim=-1)
    return shaped / shaped.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(torch.finfo(white.dtype).tiny)


def household_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Tensor:
    """A synthetic room of household sounds, non-stationary, drawn per row: what a kitchen or a
    living room adds to a command when no recording of one is at hand.

    - a bed of coloured noise (power ~ 1/f**e, e uniform in [0, 2]: a tap, a fan, an extractor)
      whose level drifts slowly (0.1-2 Hz, up to +-80%);
    - in half the rows, a motor's hum: a fundamental of 50-300 Hz and four harmonics at 1/k;
    - clatter: short resonant knocks (dishes, cutlery, a door), 0.3-4 a second, each a decaying
      sum of three partials at 0.8-6 kHz with a 5-60 ms decay, up to 8 times the bed's level.

    Args:
        shape: ``[B, S]``.
        generator: source of randomness; ``None`` uses torch's global one.
        device: where the result lives (default CPU).
        sample_rate: the rate the frequencies are laid out for.

    Returns:
        float32 noise of ``shape`` with unit RMS along the last axis.
    """
    batch_size, num_samples = (int(size) for size in shape)
    here = draw_device(generator, device)

    def uniform(low: float, high: float, *size: int) -> Tensor:
        return low + (high - low) * random_uniform(size, generator, here)

    time = torch.arange(num_samples, device=here, dtype=torch.float32) / sample_rate
    bed = _shaped_noise(
        white_noise((batch_size, num_samples), generator, here), uniform(0.0, 2.0, batch_size)
    )
    drift = uniform(0.1, 2.0, batch_size, 1)
    depth = uniform(0.0, 0.8, batch_size, 1)
    bed = bed * (1.0 + depth * torch.sin(2 * torch.pi * drift * time + uniform(0.0, 6.3, batch_size, 1)))

    fundamental = uniform(50.0, 300.0, batch_size, 1, 1)
    harmonics = torch.arange(1, 6, device=here, dtype=torch.float32)[None, :, None]
    phases = uniform(0.0, 6.3, batch_size, 5, 1)
    hum = (torch.sin(2 * torch.pi * fundamental * harmonics * time + phases) / harmonics).sum(1)
    hum = hum / hum.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    hum = hum * (uniform(0.0, 1.0, batch_size, 1) < 0.5) * uniform(0.1, 0.7, batch_size, 1)

    rate = uniform(0.3, 4.0, batch_size, 1)
    onsets = random_uniform((batch_size, num_samples), generator, here) < rate / sample_rate
    knocks = onsets * uniform(-1.0, 1.0, batch_size, num_samples)
    width = int(0.2 * sample_rate)
    kernel_time = time[:width] if num_samples >= width else torch.arange(width, device=here) / sample_rate
    decay = uniform(0.005, 0.06, batch_size, 1)
    partials = uniform(800.0, 6000.0, batch_size, 3, 1)
    ring = torch.sin(2 * torch.pi * partials * kernel_time).sum(1) * torch.exp(-kernel_time / decay)
    size = num_samples + width
    clatter = torch.fft.irfft(torch.fft.rfft(knocks, n=size) * torch.fft.rfft(ring, n=size), n=size)[
        :, :num_samples
    ]
    clatter = clatter / clatter.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    clatter = clatter * uniform(0.5, 3.0, batch_size, 1)

    total = bed + hum + clatter
    total = total / total.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    return total.to(device)


def babble_noise(
    waveforms: Tensor,
    lengths: Tensor,
    generator: torch.Generator | None = None,
    num_speakers: int = 3,
) -> Tensor:
    """Babble for each utterance from other utterances of the same batch, never itself.

    Each utterance gets ``min(num_speakers, B - 1)`` distinct other utterances, each scaled to
    unit RMS over its valid samples, circularly shifted by a random offset and tiled to the
    full width, then summed. A batch of one has no other utterance: it gets pink noise instead
    (logged at debug level).

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        generator: source of randomness; ``None`` uses torch's global one.
        num_speakers: other utterances summed into each babble.

    Returns:
        ``[B, S]`` babble, zero beyond each utterance's length.
    """
    batch_size, width = waveforms.shape
    device = waveforms.device
    valid = valid_mask(lengths, width, device)
    if batch_size < 2:
        logger.debug("babble needs 2 or more utterances in a batch, got %d: using pink noise", batch_size)
        return pink_noise((batch_size, width), generator, device).to(waveforms.dtype) * valid
    num_speakers = min(num_speakers, batch_size - 1)

    # Random distinct sources per row; the diagonal (the utterance itself) can never win.
    scores = random_uniform((batch_size, batch_size), generator, device)
    scores.fill_diagonal_(-1.0)
    sources = scores.topk(num_speakers, dim=1).indices  # [B, K]

    source_lengths = torch.as_tensor(lengths, device=device).long().clamp(1, width)
    signal = waveforms * valid
    rms = (signal.pow(2).sum(1) / source_lengths).sqrt().clamp_min(torch.finfo(signal.dtype).tiny)
    flat = (signal / rms[:, None]).reshape(-1)

    lengths_of_sources = source_lengths[sources]  # [B, K]
    offsets = (random_uniform(sources.shape, generator, device) * lengths_of_sources).long()
    time = torch.arange(width, device=device)
    babble = torch.zeros_like(signal)
    for speaker in range(num_speakers):
        period = lengths_of_sources[:, speaker, None]
        positions = (time[None, :] + offsets[:, speaker, None]) % period
        babble += flat[sources[:, speaker, None] * width + positions]
    return babble * valid


def mix_talkers(
    clips: Sequence[Tensor],
    num_samples: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Babble from given talkers: each clip scaled to unit RMS, circularly shifted by a random
    offset, tiled to ``num_samples`` and summed (zeros when there is no clip).

    Args:
        clips: 1-D waveforms of the talkers (an empty or silent one adds nothing).
        num_samples: the length of the babble.
        generator: source of the offsets (one uniform draw per clip); ``None``: torch's global one.
        device: where the babble lives (default: the first clip's device).

    Returns:
        ``[num_samples]`` babble.
    """
    if device is None:
        device = clips[0].device if clips else "cpu"
    device = torch.device(device)
    total = torch.zeros(num_samples, device=device)
    if not clips:
        return total
    offsets = random_uniform((len(clips),), generator, device).tolist()
    time = torch.arange(num_samples, device=device)
    for clip, offset in zip(clips, offsets, strict=True):
        clip = clip.to(device=device, dtype=torch.float32).reshape(-1)
        if clip.numel() == 0:
            continue
        clip = clip / clip.pow(2).mean().sqrt().clamp_min(1e-12)
        total += clip[(time + int(offset * clip.numel())) % clip.numel()]
    return total


class NoiseBank:
    """A folder of noise recordings held in memory, served as random crops.

    Files (any suffix :func:`pipeline.data.audio.load_audio` reads, searched recursively) are loaded
    once, mixed down to mono and resampled. :meth:`sample` picks a file uniformly per row and a
    random start, tiling the file when it is shorter than the request.

    Args:
        folder: the noise folder.
        sample_rate: rate to resample to.

    Raises:
        AudioError: the folder is missing or holds no audio, or a file cannot be decoded
            (the message names the folder or the file).
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> None:
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        if not self.folder.is_dir():
            raise AudioError(f"{self.folder}: noise folder not found")
        self.files = sorted(
            path
            for path in self.folder.rglob("*")
            if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
        )
        if not self.files:
            suffixes = ", ".join(sorted(AUDIO_SUFFIXES))
            raise AudioError(f"{self.folder}: noise folder holds no audio files ({suffixes})")
        clips = [torch.from_numpy(load_audio(path, sample_rate)) for path in self.files]
        self.lengths = torch.tensor([len(clip) for clip in clips])
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.samples = torch.cat(clips)
        self._on_device: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
        logger.info(
            "noise bank: %d file(s), %.1f s from %s",
            len(self.files),
            len(self.samples) / sample_rate,
            self.folder,
        )

    def __len__(self) -> int:
        return len(self.files)

    def sample(
        self,
        batch_size: int,
        num_samples: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Random crops of noise.

        Args:
            batch_size: rows to return.
            num_samples: samples per row.
            generator: source of randomness; ``None`` uses torch's global one.
            device: where the result lives (default CPU); the bank keeps a copy there.

        Returns:
            ``[batch_size, num_samples]`` float32 noise.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (
                self.samples.to(device),
                self.lengths.to(device),
                self.offsets.to(device),
            )
        samples, lengths, offsets = self._on_device[device]
        choice = (
            (random_uniform((batch_size,), generator, device) * len(self.files))
            .long()
            .clamp_max(len(self.files) - 1)
        )
        period = lengths[choice][:, None]
        start = (random_uniform((batch_size, 1), generator, device) * period).long()
        positions = (start + torch.arange(num_samples, device=device)[None, :]) % period
        return samples[offsets[choice][:, None] + positions]


def peak_frame_power(waveforms: Tensor, lengths: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """``[B]`` the mean power of each utterance's loudest 25 ms frame (10 ms hop) within its
    first ``lengths[b]`` samples; an utterance shorter than a frame is one frame."""
    frame = round(PEAK_FRAME_S * sample_rate)
    hop = round(PEAK_HOP_S * sample_rate)
    valid = valid_mask(lengths, waveforms.shape[1], waveforms.device)
    power = (waveforms * valid).pow(2)
    if power.shape[1] < frame:
        power = torch.nn.functional.pad(power, (0, frame - power.shape[1]))
    frames = power.unfold(1, frame, hop).mean(-1)  # [B, frames]
    return frames.amax(1)


def add_noise(waveforms: Tensor, lengths: Tensor, snr_db: Tensor | float, noise: Tensor,
              reference: str = "mean", sample_rate: int = SAMPLE_RATE) -> Tensor:  # fmt: skip
    """Mix noise into each utterance at exactly the requested SNR.

    Noise power is measured over the first ``lengths[b]`` samples; so is the signal's with
    ``reference="mean"``, while ``"peak"`` takes the power of its loudest 25 ms frame
    (:func:`peak_frame_power`), the way noisy spoken-command benchmarks mix: the same number
    of dB is then far noisier. A row whose noise is silent there is returned clean. No
    clipping: the sum may exceed [-1, 1].

    Args:
        waveforms: ``[B, S]`` padded batch.
        lengths: ``[B]`` valid samples per utterance.
        snr_db: ``[B]`` (or one number) target signal-to-noise ratio in dB.
        noise: ``[B, S]`` noise; only its first ``lengths[b]`` samples are used.
        reference: ``mean`` or ``peak`` (:data:`SNR_REFERENCES`).
        sample_rate: the batch's rate (frames of the peak reference).

    Returns:
        ``[B, S]`` new tensor, zero beyond each utterance's length.
    """
    if noise.shape != waveforms.shape:
        raise ValueError(
            f"noise shape {tuple(noise.shape)} does not match waveforms {tuple(waveforms.shape)}"
        )
    device = waveforms.device
    dtype = torch.promote_types(waveforms.dtype, torch.float32)
    valid = valid_mask(lengths, waveforms.shape[1], device)
    clean = waveforms.to(dtype) * valid
    noise = noise.to(device=device, dtype=dtype) * valid
    if reference not in SNR_REFERENCES:
        raise ValueError(f"SNR reference must be one of {', '.join(SNR_REFERENCES)}, got {reference!r}")
    samples = torch.as_tensor(lengths, device=device).to(dtype).clamp_min(1.0)
    noise_power = noise.pow(2).sum(1) / samples
    if reference == "peak":
        signal_power = peak_frame_power(clean, lengths, sample_rate)
    else:
        signal_power = clean.pow(2).sum(1) / samples
    snr = torch.as_tensor(snr_db, device=device, dtype=dtype)
    scale = torch.sqrt(signal_power / (noise_power.clamp_min(torch.finfo(dtype).tiny) * 10.0 ** (snr / 10.0)))
    scale = torch.where(noise_power > 0, scale, torch.zeros_like(scale))
    return (clean + scale[:, None] * noise).to(waveforms.dtype)
