"""Where the speech is: an energy detector for the no-speech check, trimming and segmentation.

    regions = speech_regions(waveform, 16000)        # [(0.42, 1.87), (3.10, 4.55)] in seconds
    waveform = trim_silence(waveform, 16000)          # leading/trailing non-speech cut, with a margin
    if not has_speech(waveform, 16000): ...           # silence, noise, hum, clicks

One pass over 10 ms frames (25 ms windows) of the signal band-passed to 300-3400 Hz (which
takes out DC, mains hum and its first harmonics, and most of brown noise's rumble):

1. frame log-energy in dB;
2. an adaptive noise floor: the minimum of the (lightly smoothed) energy within
   ``floor_window_s`` either side of each frame, so the floor follows a noise that changes level;
3. a frame is active when its energy is ``margin_db`` above the floor and above ``absolute_db``
   (digital silence with dither never counts);
4. active runs closer than ``merge_gap_s`` are merged into regions; a region is kept when it
   holds at least ``min_speech_s`` of active frames, a run of ``min_run_s`` (a syllable, not a
   click) and an energy spread of ``min_spread_db`` (speech rises and falls with its syllables;
   the onset of a stationary noise after silence does not).

torchaudio's ``functional.vad`` (sox's ``vad`` effect) was measured as the alternative
(2026-12-03, one thread, 3 s inputs): it removed white noise, hum and digital silence entirely,
but it only trims the front (1 s of silence either side of a command came back as 1 s less, the
trailing second kept), it answers with audio rather than regions (no segmentation), and it took
12-19 ms per input against about 1 ms here, which alone would exceed the 10 ms latency budget.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import butter, sosfilt

from pipeline.core.errors import SlukdError

Region = tuple[float, float]  # (start, end) in seconds
BLOCK_HOPS = 6000  # frames' worth of samples filtered at a time (60 s at 10 ms)


class VadError(SlukdError, ValueError):
    """VAD settings that do not make sense."""


@dataclass(frozen=True)
class VadConfig:
    """Settings of the energy detector (defaults tuned on espeak/piper speech against silence,
    white/pink/brown noise, mains hum and clicks)."""

    frame_s: float = 0.025  # analysis window
    hop_s: float = 0.010  # frame step
    band_hz: tuple[float, float] = (300.0, 3400.0)  # energy of this band (hum and rumble stay out)
    # A frame is active this far above the noise floor. 8 dB (until 2026-12-03) lost the quiet
    # syllables of commands in noise: with noise 12 dB under the loudest frame, trimming cut words
    # and the kitchen student's command acceptance fell from 75-80% (3 dB, or no trimming) to
    # 44-54%; at 6 dB 94% of commands in white noise were "no speech" (11% at 3 dB). Stationary
    # noise, hum, brown noise after silence still find none (the spread check below); some
    # silences and clicks now reach the model, whose threshold answers for them.
    margin_db: float = 3.0
    absolute_db: float = -70.0  # and above this (dBFS of the band-passed frame's mean square)
    floor_window_s: float = 1.0  # the noise floor is the minimum within this much either side
    smooth_frames: int = 3  # moving average of the energy before the floor's minimum
    merge_gap_s: float = 0.25  # active runs closer than this form one region
    min_speech_s: float = 0.12  # active frames a region needs
    min_run_s: float = 0.1  # its longest active run needs this (a click is shorter)
    min_spread_db: float = 4.0  # 95th minus 5th percentile of the region's frame energies
    trim_margin_s: float = 0.1  # kept either side of the speech when trimming
    segment_gap_s: float = 0.5  # segmentation merges regions closer than this

    def __post_init__(self) -> None:
        try:
            low, high = (float(hz) for hz in self.band_hz)
        except (TypeError, ValueError):
            raise VadError(f"VAD: band_hz must be two frequencies, got {self.band_hz!r}") from None
        if not 0 < low < high:
            raise VadError(f"VAD: band_hz must be 0 < low < high, got {self.band_hz!r}")
        object.__setattr__(self, "band_hz", (low, high))  # a JSON list back to a (hashable) tuple
        if self.hop_s <= 0 or self.frame_s < self.hop_s:
            raise VadError(f"VAD: need 0 < hop_s <= frame_s, got hop_s={self.hop_s}, frame_s={self.frame_s}")
        for name in ("floor_window_s", "merge_gap_s", "min_speech_s", "min_run_s", "trim_margin_s",
                     "segment_gap_s"):  # fmt: skip
            if getattr(self, name) < 0:
                raise VadError(f"VAD: {name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> VadConfig:
        """Settings from a saved dict; unknown keys are an error naming them."""
        values = dict(values or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise VadError(f"VAD: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


DEFAULT_VAD = VadConfig()
# New feature stores and new students trim leading and trailing non-speech unless told otherwise
# (inference then trims the same way: the model dir records it).
TRIM_SILENCE_DEFAULT = True


@functools.lru_cache(maxsize=8)
def _band_filter(sample_rate: int, band_hz: tuple[float, float]) -> np.ndarray:
    """4th-order Butterworth band-pass (second-order sections) of the speech band."""
    high = min(band_hz[1], 0.45 * sample_rate)
    return butter(4, (band_hz[0], high), btype="bandpass", fs=sample_rate, output="sos")


def frame_energies(waveform: np.ndarray, sample_rate: int, config: VadConfig = DEFAULT_VAD) -> np.ndarray:
    """Log-energy in dB of each frame (``frame_s`` long, ``hop_s`` apart) of the band-passed waveform."""
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim != 1:
        raise VadError(f"VAD: expected a mono waveform [samples], got shape {samples.shape}")
    hop = max(1, round(config.hop_s * sample_rate))
    window = max(hop, round(config.frame_s * sample_rate))
    if samples.size < window:
        samples = np.pad(samples, (0, window - samples.size)) if samples.size else samples
    count = 1 + (samples.size - window) // hop if samples.size else 0
    if count <= 0:
        return np.zeros(0, dtype=np.float64)
    sos = _band_filter(sample_rate, config.band_hz)
    state = np.zeros((sos.shape[0], 2))  # the filter runs on in blocks: a long recording needs no
    power = np.empty(count)  # float64 copy of itself, only its frames' energies
    carry, done = np.zeros(0), 0
    for begin in range(0, samples.size, BLOCK_HOPS * hop):
        filtered, state = sosfilt(sos, samples[begin : begin + BLOCK_HOPS * hop].astype(np.float64), zi=state)
        data = np.concatenate([carry, filtered])  # starts at sample done * hop
        take = min(count - done, 1 + (len(data) - window) // hop if len(data) >= window else 0)
        if take > 0:
            squares = np.concatenate([[0.0], np.cumsum(data * data)])
            starts = np.arange(take) * hop
            power[done : done + take] = (squares[starts + window] - squares[starts]) / window
            done += take
        carry = data[take * hop :] if take > 0 else data
    return 10.0 * np.log10(power + 1e-12)


def active_frames(energies: np.ndarray, config: VadConfig = DEFAULT_VAD) -> np.ndarray:
    """Boolean per frame: above the adaptive noise floor by ``margin_db`` and above ``absolute_db``."""
    if energies.size == 0:
        return np.zeros(0, dtype=bool)
    smoothed = uniform_filter1d(energies, max(1, config.smooth_frames), mode="nearest")
    reach = max(1, round(config.floor_window_s / config.hop_s))
    floor = minimum_filter1d(smoothed, 2 * reach + 1, mode="nearest")
    return (energies > floor + config.margin_db) & (energies > config.absolute_db)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the True runs of a boolean mask."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _frame_regions(energies: np.ndarray, config: VadConfig, merge_gap_s: float) -> list[tuple[int, int]]:
    """Kept regions as [start, end) frame ranges."""
    runs = _runs(active_frames(energies, config))
    gap = round(merge_gap_s / config.hop_s)
    groups: list[list[tuple[int, int]]] = []
    for run in runs:
        if groups and run[0] - groups[-1][-1][1] <= gap:
            groups[-1].append(run)
        else:
            groups.append([run])
    min_active = round(config.min_speech_s / config.hop_s)
    min_run = round(config.min_run_s / config.hop_s)
    kept = []
    for group in groups:
        lengths = [end - start for start, end in group]
        start, end = group[0][0], group[-1][1]
        low, high = np.percentile(energies[start:end], [5, 95])
        if sum(lengths) >= min_active and max(lengths) >= min_run and high - low >= config.min_spread_db:
            kept.append((start, end))
    return kept


def _to_seconds(
    frames: list[tuple[int, int]], samples: int, sample_rate: int, config: VadConfig
) -> list[Region]:
    duration = samples / sample_rate
    window = config.frame_s
    return [(start * config.hop_s, min(duration, (end - 1) * config.hop_s + window)) for start, end in frames]


def speech_regions(waveform: np.ndarray, sample_rate: int, config: VadConfig = DEFAULT_VAD,
                   merge_gap_s: float | None = None) -> list[Region]:  # fmt: skip
    """Speech as ``(start_s, end_s)`` pairs in time order (empty: no speech).

    Args:
        waveform: mono samples in [-1, 1].
        sample_rate: their rate.
        config: detector settings.
        merge_gap_s: regions closer than this are one (default ``config.merge_gap_s``).
    """
    energies = frame_energies(waveform, sample_rate, config)
    gap = config.merge_gap_s if merge_gap_s is None else merge_gap_s
    return _to_seconds(_frame_regions(energies, config, gap), len(waveform), sample_rate, config)


def has_speech(waveform: np.ndarray, sample_rate: int, config: VadConfig = DEFAULT_VAD) -> bool:
    """Whether the detector finds any speech region."""
    return bool(speech_regions(waveform, sample_rate, config))


def trim_silence(waveform: np.ndarray, sample_rate: int, config: VadConfig = DEFAULT_VAD) -> np.ndarray:
    """The waveform from its first to its last speech region, ``trim_margin_s`` wider either side;
    unchanged when it holds no speech (there is nothing to keep, and the caller decides)."""
    return trim_to_regions(waveform, sample_rate, speech_regions(waveform, sample_rate, config), config)


def trim_to_regions(waveform: np.ndarray, sample_rate: int, regions: list[Region],
                    config: VadConfig = DEFAULT_VAD) -> np.ndarray:  # fmt: skip
    """:func:`trim_silence` with regions already found (a slice of ``waveform``, or itself)."""
    if not regions:
        return waveform
    start = max(0, int((regions[0][0] - config.trim_margin_s) * sample_rate))
    end = min(len(waveform), int(np.ceil((regions[-1][1] + config.trim_margin_s) * sample_rate)))
    return waveform[start:end]


def speech_segments(waveform: np.ndarray, sample_rate: int, max_seconds: float,
                    config: VadConfig = DEFAULT_VAD) -> list[Region]:  # fmt: skip
    """Speech segments of a long recording for one model call each: regions closer than
    ``segment_gap_s`` merged, ``trim_margin_s`` added either side (never overlapping a neighbour),
    and a segment longer than ``max_seconds`` cut at its quietest frame in the last half of the
    allowed length (so no segment exceeds the model's window)."""
    if max_seconds <= 2 * config.trim_margin_s:
        raise VadError(f"VAD: max_seconds {max_seconds:g} is too short for segments")
    energies = frame_energies(waveform, sample_rate, config)
    frames = _frame_regions(energies, config, config.segment_gap_s)
    longest = int((max_seconds - 2 * config.trim_margin_s - config.frame_s) / config.hop_s)
    pieces: list[tuple[int, int]] = []
    for start, end in frames:
        while end - start > longest:
            window = energies[start + longest // 2 : start + longest]
            cut = start + longest // 2 + int(np.argmin(window))
            pieces.append((start, cut))
            start = cut
        pieces.append((start, end))
    regions = _to_seconds(pieces, len(waveform), sample_rate, config)
    duration = len(waveform) / sample_rate
    segments: list[Region] = []
    for index, (start, end) in enumerate(regions):
        low = max(0.0, start - config.trim_margin_s)
        high = min(duration, end + config.trim_margin_s)
        if segments:
            low = max(low, segments[-1][1])
        if index + 1 < len(regions):
            high = min(high, max(end, regions[index + 1][0]))
        segments.append((round(low, 4), round(high, 4)))
    return segments


__all__ = [
    "DEFAULT_VAD",
    "Region",
    "VadConfig",
    "VadError",
    "active_frames",
    "frame_energies",
    "has_speech",
    "speech_regions",
    "speech_segments",
    "trim_silence",
    "trim_to_regions",
]
