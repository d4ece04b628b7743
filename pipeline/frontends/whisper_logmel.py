"""Whisper's log-mel spectrogram, batched on the waveforms' device, without padding to 30 s.

What Whisper computes (``whisper.audio.log_mel_spectrogram``, Hugging Face's
``WhisperFeatureExtractor``): a 400-point STFT with a periodic Hann window every 160 samples
(10 ms), centred with reflect padding, the last frame dropped; the power spectrum through 80
Slaney-style mel filters (librosa's defaults); ``log10`` with a 1e-10 floor; everything below
``max - 8`` raised to ``max - 8``; then ``(x + 4) / 4``. ``num_samples // 160`` frames.

What differs here, on purpose:

- No padding to 30 s: an utterance keeps its own length; the student slices Whisper's
  positional table to it. Past the end of each utterance the samples are zero, exactly as in
  the 30 s-padded reference, so every valid frame is the reference's frame.
- The ``max - 8`` clamp is taken per utterance over its valid frames, where the reference takes it
  over the padded 30 s. Padding is digital silence (log10 floor, -10), which never raises the
  maximum, so the two agree except when the last, partly-filled frame holds the loudest bin.
- Frames past each utterance's length are zero (the reference's padding frames would hold
  ``(max - 4) / 4``); the student masks them anyway. A batch shorter than one hop (160
  samples) still gets one frame, all zero.

:class:`WhisperLogMel` is the front-end (``name = "whisper_logmel"``, features final after
``extract``, ``normalize`` is the identity). :class:`GraphLogMel` computes the same thing with
export-friendly ops only (the DFT as a strided 1-D convolution, the reflect padding as a
gather), for ONNX graphs.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn
from torch.nn import functional

from pipeline.frontends.base import FrontEnd, pad_to_length, register_frontend

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
NUM_MEL_BINS = 80
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below each utterance's maximum
_EDGE = N_FFT // 2  # samples of centring padding on each side


def mel_filters(num_mel_bins: int = NUM_MEL_BINS) -> Tensor:
    """``[n_fft/2 + 1, num_mel_bins]`` Slaney mel filters (librosa's ``filters.mel`` defaults, as Whisper)."""
    return torchaudio.functional.melscale_fbanks(
        N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, num_mel_bins, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )


def frame_counts(num_samples: Tensor) -> Tensor:
    """Whisper frames for ``num_samples`` samples: one per 160 samples."""
    return torch.div(num_samples, HOP_LENGTH, rounding_mode="floor")


def _centre(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """Zero past each length, then Whisper's centring: reflect on the left, zeros on the right.

    The right side is zeros, not a reflection: in the reference the utterance is followed by its
    30 s padding. Gather (not ``flip``) keeps the reflection exportable.
    """
    positions = torch.arange(waveforms.shape[1], device=waveforms.device)
    waveforms = waveforms * (positions[None, :] < lengths[:, None]).to(waveforms.dtype)
    padded = functional.pad(waveforms, (0, _EDGE))  # at least _EDGE + 1 samples to reflect from
    reflect = torch.arange(_EDGE, 0, -1, device=waveforms.device)
    return torch.cat([padded[:, reflect], padded], dim=1)


def _normalise(power: Tensor, banks: Tensor, counts: Tensor) -> Tensor:
    """``[batch, bins, frames]`` power -> ``[batch, frames, mels]`` Whisper log-mel, zero past ``counts``."""
    mel = torch.matmul(power.transpose(1, 2), banks).clamp_min(LOG_FLOOR).log10()  # [batch, frames, mels]
    frames = torch.arange(mel.shape[1], device=mel.device)
    valid = (frames[None, :] < counts[:, None]).unsqueeze(-1)
    peak = mel.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
    mel = torch.maximum(mel, peak - DYNAMIC_RANGE)
    return ((mel + 4.0) / 4.0) * valid.to(mel.dtype)


@register_frontend
class WhisperLogMel(FrontEnd):
    """The ``whisper_logmel`` front-end: 16 kHz waveforms -> ``[batch, frames, 80]`` Whisper log-mel.

    The features are final after ``extract``: no statistics, ``normalize`` is the identity.
    """

    name: ClassVar[str] = "whisper_logmel"

    def __init__(self, num_mel_bins: int = NUM_MEL_BINS) -> None:
        self.feature_dim = num_mel_bins
        self._banks = mel_filters(num_mel_bins)
        self._window = torch.hann_window(N_FFT)

    def extract(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch, samples]`` + ``[batch]`` valid samples -> ``[batch, frames, mels]`` + ``[batch]`` frames."""
        device = waveforms.device
        waveforms = pad_to_length(waveforms.to(torch.float32), HOP_LENGTH)  # at least one frame
        lengths = lengths.to(device)
        spectrum = torch.stft(
            _centre(waveforms, lengths), N_FFT, HOP_LENGTH, window=self._window.to(device), center=False,
            return_complex=True,
        )[..., :-1]  # fmt: skip
        counts = frame_counts(lengths)
        return _normalise(spectrum.abs().square(), self._banks.to(device), counts), counts

    def frame_counts(self, num_samples: Tensor) -> Tensor:
        return frame_counts(num_samples)

    def graph_module(self, min_frames: int = 1) -> GraphLogMel:
        """This log-mel as export-friendly ops (:class:`GraphLogMel`), at least ``min_frames`` frames."""
        return GraphLogMel(self.feature_dim, min_frames)

    def extraction_config(self) -> dict:
        return {"name": self.name, "num_mel_bins": self.feature_dim}

    @classmethod
    def from_config(cls, config: dict) -> WhisperLogMel:
        unknown = set(config) - {"name", "num_mel_bins"}
        if config.get("name", cls.name) != cls.name or unknown:
            raise ValueError(f"not a {cls.name} front-end config: {config}")
        return cls(int(config.get("num_mel_bins", NUM_MEL_BINS)))


def dft_analysis_matrix() -> np.ndarray:
    """``[2 * (n_fft/2 + 1), n_fft]``: one frame -> real and imaginary DFT of its Hann-windowed samples."""
    window = torch.hann_window(N_FFT, dtype=torch.float64).numpy()
    bins = np.arange(N_FFT // 2 + 1)[:, None] * np.arange(N_FFT)[None, :] * (2 * np.pi / N_FFT)
    return np.concatenate([np.cos(bins) * window, -np.sin(bins) * window], axis=0)


class GraphLogMel(nn.Module):
    """:class:`WhisperLogMel` with export-friendly ops: the DFT as a strided conv1d, reflect as a gather.

    ``forward(waveforms [batch, samples], lengths [batch]) -> (features [batch, frames, mels],
    frames [batch])``; traceable by ``torch.onnx.export(..., dynamo=False)`` at opset 17.
    Inputs shorter than ``min_frames`` frames (at least one) are zero-padded to that many (zero)
    frames, as :class:`WhisperLogMel` and the student pad them in PyTorch.
    """

    def __init__(self, num_mel_bins: int = NUM_MEL_BINS, min_frames: int = 1) -> None:
        super().__init__()
        self.min_samples = max(min_frames, 1) * HOP_LENGTH
        analysis = torch.from_numpy(dft_analysis_matrix()).float()
        self.register_buffer("analysis", analysis[:, None, :].contiguous(), persistent=False)
        self.register_buffer("banks", mel_filters(num_mel_bins).contiguous(), persistent=False)
        self.bins = N_FFT // 2 + 1

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        centred = _centre(pad_to_length(waveforms, self.min_samples), lengths)
        spectrum = functional.conv1d(centred.unsqueeze(1), self.analysis, stride=HOP_LENGTH)[..., :-1]
        real, imaginary = spectrum[:, : self.bins], spectrum[:, self.bins :]
        counts = frame_counts(lengths)
        return _normalise(real * real + imaginary * imaginary, self.banks, counts), counts
