"""Audio input and output, in one place.

Every stage that touches a waveform goes through :func:`load_audio`: it decodes with soundfile
(wav, flac, ogg, mp3) and falls back to librosa for what libsndfile cannot read (m4a, ...), mixes down to mono and
resamples to :data:`SAMPLE_RATE`. Errors are :class:`AudioError` with a one-line message
that names the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from pipeline.core.errors import SlukdError

logger = logging.getLogger(__name__)

# Audio constants: the whole toolkit works at this rate, 16-bit mono on disk.
SAMPLE_RATE = 16000
SUBTYPE = "PCM_16"

# Suffixes only libsndfile should read: a failure there is final, no librosa fallback.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au"})
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | frozenset({".mp3", ".m4a", ".opus", ".webm", ".wma"})


class AudioError(SlukdError, ValueError):
    """An audio file that is missing, unreadable, empty or invalid."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, without decoding the samples."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header: sample rate, channels and length.

    Raises:
        AudioError: the file is missing, cannot be decoded, or holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = soundfile.info(str(path))
        result = AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))
    except Exception as error:  # libsndfile raises RuntimeError/LibsndfileError
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise AudioError(f"{path}: cannot read audio ({_short(error)})") from None
        samples, sample_rate = _decode_with_librosa(path)  # formats libsndfile lacks (m4a, ...)
        channels = 1 if samples.ndim == 1 else samples.shape[0]
        result = AudioInfo(path, sample_rate, channels, samples.shape[-1])
    if result.frames <= 0:
        raise AudioError(f"{path}: audio file is empty (0 samples)")
    return result


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
) -> np.ndarray:
    """Decode an audio file to float32 samples in [-1, 1].

    Args:
        path: wav/flac/ogg/mp3 (soundfile), other formats through librosa.
        sample_rate: resample to this rate; ``None`` keeps the file's own rate.
        mono: average the channels into one.

    Returns:
        ``[samples]`` when ``mono``, otherwise ``[channels, samples]``.

    Raises:
        AudioError: missing, undecodable, empty, or non-finite audio.
    """
    return read_audio(path, sample_rate, mono)[0]


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
) -> tuple[np.ndarray, AudioInfo]:
    """:func:`load_audio`, plus what the file held before conversion (rate, channels, length)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        samples = samples.T  # [channels, samples]
    except Exception as error:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise AudioError(f"{path}: cannot read audio ({_short(error)})") from None
        samples, file_rate = _decode_with_librosa(path)  # formats libsndfile lacks (m4a, ...)
        if samples.ndim == 1:
            samples = samples[None, :]
    info = AudioInfo(path, int(file_rate), samples.shape[0], samples.shape[-1])
    if samples.shape[-1] == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples)")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if mono:
        samples = to_mono(samples)
    if sample_rate is not None and file_rate != sample_rate:
        samples = resample(samples, file_rate, sample_rate)
    return np.ascontiguousarray(samples, dtype=np.float32), info


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average ``[channels, samples]`` into ``[samples]``; 1-D input is returned as is."""
    if samples.ndim == 1:
        return samples
    if samples.shape[0] == 1:
        return samples[0]
    return samples.mean(axis=0)


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling along the last axis (soxr, high quality)."""
    if orig_rate == target_rate:
        return samples
    import soxr

    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return soxr.resample(samples, orig_rate, target_rate, quality="HQ").astype(np.float32)
    # soxr wants [frames, channels]
    return np.ascontiguousarray(
        soxr.resample(samples.T, orig_rate, target_rate, quality="HQ").T, dtype=np.float32
    )


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM, atomically: a temporary name first, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    soundfile.write(str(temporary), clipped, sample_rate, subtype=SUBTYPE, format=_format_of(path))
    os.replace(temporary, path)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(suffix, "WAV")


def _decode_with_librosa(path: Path) -> tuple[np.ndarray, int]:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # audioread fallback warnings are noise here
            samples, file_rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as error:
        raise AudioError(f"{path}: cannot decode audio ({_short(error)})") from None
    return np.asarray(samples, dtype=np.float32), int(file_rate)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
