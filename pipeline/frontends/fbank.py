"""Log-mel filterbank features in padded batches on any device.

:class:`FbankExtractor` computes Kaldi-compatible log-mel filterbanks (the same numbers as
``torchaudio.compliance.kaldi.fbank`` with ``dither=0``) for a whole padded batch at once, on
CPU or GPU. Every frame is computed from samples inside its own utterance only, so batched and
one-at-a-time extraction agree, and padding never leaks into an utterance's frames.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pipeline.core.devices import resolve_device
from pipeline.data.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

WINDOWS = ("povey", "hamming", "hanning", "rectangular")
FLOAT_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's log floor


@dataclass
class FbankConfig:
    """Filterbank settings; the defaults are Kaldi's (80 bins, 25 ms window, 10 ms shift)."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "povey"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from the Nyquist frequency
    # Scale applied to float waveforms in [-1, 1] before analysis; 32768 gives Kaldi's int16
    # range, where the log floor sits far below any recorded noise.
    waveform_scale: float = 32768.0
    dither: float = 0.0  # > 0 adds Gaussian noise of this std (in scaled units) to every sample

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        if self.num_mel_bins < 4:
            raise ValueError(f"num_mel_bins must be at least 4, got {self.num_mel_bins}")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ValueError("need 0 < frame_shift_ms <= frame_length_ms")
        nyquist = self.sample_rate / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not 0 <= self.low_freq < high <= nyquist:
            raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist:g} Hz")

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << math.ceil(math.log2(self.window_size))

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.window_shift


def frame_counts(num_samples: Tensor, config: FbankConfig) -> Tensor:
    """Frames a waveform of each length yields (Kaldi's ``snip_edges``: only whole windows)."""
    size, shift = config.window_size, config.window_shift
    counts = torch.div(num_samples - size, shift, rounding_mode="floor") + 1
    return torch.where(num_samples >= size, counts, torch.zeros_like(counts))


def window_function(config: FbankConfig) -> Tensor:
    """The analysis window ``[window_size]`` in float64 (without ``waveform_scale``)."""
    size = config.window_size
    if config.window == "povey":
        return torch.hann_window(size, periodic=False, dtype=torch.float64).pow(0.85)
    if config.window == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    if config.window == "hanning":
        return torch.hann_window(size, periodic=False, dtype=torch.float64)
    return torch.ones(size, dtype=torch.float64)


def mel_banks(config: FbankConfig) -> Tensor:
    """Kaldi's triangular mel filters as a float32 ``[fft/2 + 1, num_mel_bins]`` matrix (power -> mel)."""
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(
        config.num_mel_bins, config.fft_size, float(config.sample_rate),
        config.low_freq, config.high_freq, 100.0, -500.0, 1.0,
    )  # fmt: skip
    banks = torch.nn.functional.pad(banks, (0, 1))  # [bins, fft/2 + 1]
    return banks.T.contiguous().to(torch.float32)


def fbank_analysis_matrix(config: FbankConfig) -> np.ndarray:
    """``[2 * (fft/2 + 1), window]``: one frame's samples -> real and imaginary DFT of Kaldi's windowed frame.

    DC removal, pre-emphasis (first sample scaled by ``1 - c``), the window (with
    ``waveform_scale`` folded in) and zero padding to the FFT size are all linear in the frame,
    so together with the DFT they are one matrix, computed here in float64. Applied as a
    strided 1-D convolution it is an export-friendly form of :meth:`FbankExtractor.extract_batch`.
    """
    size, fft = config.window_size, config.fft_size
    frames = np.eye(size)  # column j: the response to a unit impulse at sample j
    if config.remove_dc_offset:
        frames = frames - frames.mean(axis=0, keepdims=True)
    emphasised = frames.copy()
    coefficient = config.preemphasis
    emphasised[1:] = frames[1:] - coefficient * frames[:-1]
    emphasised[0] = frames[0] * (1.0 - coefficient)
    window = window_function(config).numpy() * config.waveform_scale
    windowed = emphasised * window[:, None]  # [size, size]: sample index x impulse
    bins = fft // 2 + 1
    frequencies = np.arange(bins)[:, None] * np.arange(size)[None, :] * (2 * np.pi / fft)
    real = np.cos(frequencies) @ windowed
    imaginary = -np.sin(frequencies) @ windowed
    return np.concatenate([real, imaginary], axis=0)


class FbankExtractor:
    """Batched log-mel filterbanks; window and mel matrix are built once per device."""

    def __init__(self, config: FbankConfig | None = None) -> None:
        self.config = config or FbankConfig()
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @property
    def feature_dim(self) -> int:
        return self.config.num_mel_bins

    def window_and_banks(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """float32 ``window * waveform_scale`` ``[window]`` and mel banks ``[fft/2 + 1, bins]`` on ``device``."""
        if device not in self._cache:
            self._cache[device] = (
                (window_function(self.config) * self.config.waveform_scale).to(
                    device=device, dtype=torch.float32
                ),
                mel_banks(self.config).to(device=device),
            )
        return self._cache[device]

    @torch.no_grad()
    def extract_batch(
        self,
        waveforms: Tensor,
        lengths: Tensor,
        device: str | torch.device | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Log-mel features of a padded batch.

        Args:
            waveforms: ``[batch, samples]`` float waveforms in [-1, 1], zero-padded.
            lengths: ``[batch]`` valid samples per utterance.
            device: where to compute (``auto``/``None``: the waveforms' own device).
            generator: random source for dither (only used when ``config.dither > 0``).

        Returns:
            ``features [batch, frames, num_mel_bins]`` (float32, zeros past each utterance's
            end) and ``frame_counts [batch]`` (int64).
        """
        config = self.config
        device = waveforms.device if device is None else resolve_device(device)
        waveforms = waveforms.to(device=device, dtype=torch.float32)
        lengths = lengths.to(device=device, dtype=torch.int64)
        if waveforms.dim() != 2 or lengths.shape != waveforms.shape[:1]:
            raise ValueError(f"expected waveforms [batch, samples] and lengths [batch], got "
                             f"{tuple(waveforms.shape)} and {tuple(lengths.shape)}")  # fmt: skip
        counts = frame_counts(lengths, config)
        batch = waveforms.shape[0]
        max_frames = int(counts.max()) if batch else 0
        if max_frames == 0:
            return waveforms.new_zeros(batch, 0, config.num_mel_bins), counts
        size, shift = config.window_size, config.window_shift
        needed = (max_frames - 1) * shift + size
        frames = waveforms[:, :needed].unfold(1, size, shift)  # [batch, frames, window], a view
        if config.dither > 0:
            noise = torch.randn(
                frames.shape, generator=generator, device="cpu" if generator is None else generator.device
            )
            frames = frames + (config.dither / config.waveform_scale) * noise.to(device)
        window, banks = self.window_and_banks(device)
        # Everything before the FFT is written straight into the zero-padded FFT buffer:
        # pre-emphasis (Kaldi's: the first sample is scaled by 1 - c), then the frame's DC
        # offset, which after a linear pre-emphasis is just (1 - c) * mean, then the window
        # (with the waveform scale folded in). Fewer full passes over memory than the textbook
        # order, same numbers.
        buffer = torch.zeros(batch, max_frames, config.fft_size, device=device)
        windowed = buffer[..., :size]
        coefficient = config.preemphasis
        windowed[..., 1:] = frames[..., 1:]
        if coefficient:
            windowed[..., 1:].sub_(frames[..., :-1], alpha=coefficient)
        windowed[..., 0] = frames[..., 0] * (1.0 - coefficient)
        if config.remove_dc_offset:
            windowed.sub_(frames.mean(dim=-1, keepdim=True) * (1.0 - coefficient))
        windowed.mul_(window)
        spectrum = torch.fft.rfft(buffer)  # [batch, frames, fft/2 + 1]
        power = spectrum.real.square().add_(spectrum.imag.square())
        features = torch.matmul(power, banks).clamp_min_(FLOAT_EPSILON).log_()
        valid = torch.arange(max_frames, device=device)[None, :] < counts[:, None]
        return features.masked_fill_(~valid[..., None], 0.0), counts

    def extract(self, waveform: Tensor, device: str | torch.device | None = None) -> Tensor:
        """Features ``[frames, num_mel_bins]`` of one 1-D waveform."""
        waveform = torch.as_tensor(waveform, dtype=torch.float32)
        features, counts = self.extract_batch(waveform[None], torch.tensor([waveform.numel()]), device)
        return features[0, : int(counts[0])]


def extract_batch(
    waveforms: Tensor,
    lengths: Tensor,
    device: str | torch.device | None = None,
    config: FbankConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """Functional form of :meth:`FbankExtractor.extract_batch` (builds the extractor once per config)."""
    return _extractor_for(config or FbankConfig()).extract_batch(waveforms, lengths, device)


_EXTRACTORS: dict[str, FbankExtractor] = {}


def _extractor_for(config: FbankConfig) -> FbankExtractor:
    key = repr(config)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = FbankExtractor(config)
    return _EXTRACTORS[key]
