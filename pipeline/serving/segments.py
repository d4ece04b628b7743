"""Long recordings for ``slukd predict --segment``: the speech segments the model answers one by one.

The same detector as the no-speech check (:mod:`pipeline.data.vad`, with the model's own VAD
settings when it has a rejection section) finds the speech; regions closer than
``segment_gap_s`` are merged, and none is longer than the model's window
(:func:`pipeline.data.vad.speech_segments`). Each segment then goes through prediction like a
file of its own (trimming and the no-speech check included).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline.data.audio import AudioError, audio_info, read_audio
from pipeline.data.vad import DEFAULT_VAD, Region, speech_segments
from pipeline.serving.rejection import Rejection

logger = logging.getLogger(__name__)

MAX_RECORDING_SECONDS = 3600.0  # longer is refused: decoding holds it whole (1 h of 44.1 kHz stereo: 1.3 GB)


def segment_recording(path: str | os.PathLike, sample_rate: int, window_seconds: float,
                      rejection: Rejection | None = None) -> tuple[np.ndarray, list[Region]]:  # fmt: skip
    """A recording at ``sample_rate`` and its speech segments ``(start_s, end_s)``, none longer
    than ``window_seconds``.

    Raises:
        AudioError: missing, undecodable or empty audio, or longer than :data:`MAX_RECORDING_SECONDS`.
    """
    path = Path(path)
    info = audio_info(path)
    if info.duration > MAX_RECORDING_SECONDS:
        raise AudioError(
            f"{path}: audio is {info.duration:.0f} s, longer than the {MAX_RECORDING_SECONDS:g} s a recording may be"
        )
    waveform, _ = read_audio(path, sample_rate)
    vad = rejection.vad_config if rejection is not None and rejection.vad_config is not None else DEFAULT_VAD
    segments = speech_segments(waveform, sample_rate, window_seconds, vad)
    logger.info("%s: %.1f s, %d speech segment(s)", path, len(waveform) / sample_rate, len(segments))
    return waveform, segments


def cut(waveform: np.ndarray, sample_rate: int, segments: list[Region]) -> list[np.ndarray]:
    """The samples of each segment."""
    return [waveform[round(start * sample_rate) : round(end * sample_rate)] for start, end in segments]
