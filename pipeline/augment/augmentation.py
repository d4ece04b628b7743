"""Batched, on-device data augmentation for training.

Everything here works on padded batches (``[B, S]`` waveforms or ``[B, T, F]`` features, with
a ``[B]`` tensor of valid lengths) on whatever device the tensors live on:

- :func:`add_noise`: mixing at an exact per-utterance SNR, with noise from :func:`white_noise`,
  :func:`pink_noise`, :func:`babble_noise` (other utterances of the batch) or a
  :class:`NoiseBank` (a folder of the user's noise recordings);
- :func:`spec_augment`: frequency and time masks on features (Park et al. 2019);
- acoustic variety from :mod:`pipeline.augment.acoustics`: speed perturbation (Ko et al. 2015), tempo
  and pitch changes, room reverberation,
  gain and clipping, band-limiting, a telephone channel, a mu-law codec (on waveforms) and
  vocal-tract-length perturbation (on features).

:class:`Augmenter` applies what an :class:`AugmentConfig` switches on, in the order sound takes:
the speaker (speed, tempo, pitch), the room (reverberation, noise), the microphone (gain,
clipping), the channel (band-limit, telephone, codec). All randomness comes
from an optional ``torch.Generator``: numbers are drawn on the generator's device and moved to
the data, so a given seed reproduces exactly, and a CPU generator gives the same draws for CPU
and CUDA data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipeline.augment import acoustics
from pipeline.augment.noise import (
    NOISE_TYPES,
    SNR_REFERENCES,
    NoiseBank,
    add_noise,
    babble_noise,
    household_noise,
    mix_talkers,
    pink_noise,
    random_between,
    random_uniform,
    valid_mask,
    white_noise,
)
from pipeline.data.audio import SAMPLE_RATE
from pipeline.frontends.fbank import FbankConfig

logger = logging.getLogger(__name__)

MASK_VALUES = ("zero", "mean")
RANGES = ("snr_db", "reverb_rt60_s", "reverb_drr_db", "gain_db", "clip_ratio", "band_limit_low_hz",
          "band_limit_high_hz", "vtlp_warp")  # fmt: skip
NUMBER_TUPLES = ("speed_factors", "tempo_factors", "pitch_semitones", *RANGES)
WAVEFORM_PROBABILITIES = ("noise_prob", "tempo_prob", "pitch_prob", "reverb_prob", "gain_prob", "clip_prob",
                          "band_limit_prob", "telephone_prob", "codec_prob")  # fmt: skip
PROBABILITIES = (*WAVEFORM_PROBABILITIES, "vtlp_prob")
Effect = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]  # (waveforms, lengths, generator)
BabbleSources = Callable[[int], Sequence[Tensor]]  # a row of the batch -> the talkers of its babble
Generator = torch.Generator | None


@dataclass
class AugmentConfig:
    """What to augment, and how much. Every augmentation is off by default.

    Attributes:
        speed_perturb: resample each utterance by a factor drawn from ``speed_factors``.
        speed_factors: speed factors, drawn uniformly; 1.1 is 10% faster (and higher pitched).
        noise_prob: probability that an utterance gets noise; 0 switches noise off.
        noise_types: kinds of noise, drawn uniformly per utterance, among ``NOISE_TYPES``:
            ``white``, ``pink`` (1/f), ``household`` (a drifting bed, hum and clatter), ``babble``
            (other utterances of the batch), ``file`` (crops of recordings in ``noise_dir``).
        snr_db: (low, high) signal-to-noise ratio in dB, drawn uniformly per utterance.
        snr_reference: the signal power an SNR is measured against: ``mean`` (over the
            utterance) or ``peak`` (its loudest 25 ms frame, as noisy-command benchmarks mix).
        noise_dir: folder of noise recordings for the ``file`` type.
        babble_speakers: how many other utterances are summed into one babble.
        spec_augment: apply frequency and time masks to features.
        num_freq_masks: frequency masks per utterance.
        freq_mask_width: largest frequency mask, in bins (Park et al.'s F=27 for 80 bins).
        num_time_masks: time masks per utterance.
        time_mask_width: largest time mask, in frames.
        time_mask_ratio: largest time mask as a fraction of the utterance's length (Park et
            al.'s p); ``None`` leaves only ``time_mask_width``.
        mask_value: ``zero``, or ``mean`` (the utterance's mean over its valid frames).
        tempo_prob: probability of a tempo change (pitch kept); ``tempo_factors`` drawn uniformly.
        pitch_prob: probability of a pitch shift (duration kept); ``pitch_semitones`` drawn uniformly.
        reverb_prob: probability of room reverberation by a synthetic impulse response with RT60
            and direct-to-reverberant ratio drawn uniformly in ``reverb_rt60_s`` and ``reverb_drr_db``.
        gain_prob: probability of a gain change, drawn uniformly in ``gain_db``.
        clip_prob: probability of hard clipping at a fraction of the peak drawn in ``clip_ratio``.
        band_limit_prob: probability of a band-pass, edges drawn uniformly in
            ``band_limit_low_hz`` and ``band_limit_high_hz``.
        telephone_prob: probability of a telephone channel (300-3400 Hz, 8 kHz, G.711 mu-law).
        codec_prob: probability of 8-bit mu-law quantisation at the batch's own rate.
        vtlp_prob: probability of vocal-tract-length perturbation (on the features), warp factor
            drawn uniformly in ``vtlp_warp``.
    """

    speed_perturb: bool = False
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    noise_prob: float = 0.0
    noise_types: tuple[str, ...] = ("white", "pink", "babble")
    snr_db: tuple[float, float] = (0.0, 20.0)
    snr_reference: str = "mean"
    noise_dir: Path | None = None
    babble_speakers: int = 3
    spec_augment: bool = False
    num_freq_masks: int = 2
    freq_mask_width: int = 27
    num_time_masks: int = 2
    time_mask_width: int = 40
    time_mask_ratio: float | None = 0.2
    mask_value: str = "zero"
    tempo_prob: float = 0.0
    tempo_factors: tuple[float, ...] = (0.9, 1.1)
    pitch_prob: float = 0.0
    pitch_semitones: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    reverb_prob: float = 0.0
    reverb_rt60_s: tuple[float, float] = (0.2, 0.8)
    reverb_drr_db: tuple[float, float] = (0.0, 10.0)
    gain_prob: float = 0.0
    gain_db: tuple[float, float] = (-12.0, 6.0)
    clip_prob: float = 0.0
    clip_ratio: tuple[float, float] = (0.3, 0.9)
    band_limit_prob: float = 0.0
    band_limit_low_hz: tuple[float, float] = (50.0, 400.0)
    band_limit_high_hz: tuple[float, float] = (3000.0, 7500.0)
    telephone_prob: float = 0.0
    codec_prob: float = 0.0
    vtlp_prob: float = 0.0
    vtlp_warp: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        self.noise_types = tuple(self.noise_types)
        for name in NUMBER_TUPLES:
            setattr(self, name, tuple(float(value) for value in getattr(self, name)))
        if self.noise_dir is not None:
            self.noise_dir = Path(self.noise_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        if not self.speed_factors or min(self.speed_factors) <= 0:
            raise ValueError(f"speed_factors must be positive numbers, got {list(self.speed_factors)}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        unknown = [kind for kind in self.noise_types if kind not in NOISE_TYPES]
        if not self.noise_types or unknown:
            raise ValueError(
                f"noise_types must be among {', '.join(NOISE_TYPES)}, got {list(self.noise_types)}"
            )
        if "file" in self.noise_types and self.noise_dir is None:
            raise ValueError("noise type 'file' needs noise_dir (a folder of noise recordings)")
        if self.snr_reference not in SNR_REFERENCES:
            raise ValueError(
                f"snr_reference must be one of {', '.join(SNR_REFERENCES)}, got {self.snr_reference!r}"
            )
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be [low, high] with low <= high, got {list(self.snr_db)}")
        if self.babble_speakers < 1:
            raise ValueError(f"babble_speakers must be at least 1, got {self.babble_speakers}")
        for name in ("num_freq_masks", "freq_mask_width", "num_time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.time_mask_ratio is not None and not 0.0 < self.time_mask_ratio <= 1.0:
            raise ValueError(f"time_mask_ratio must be in (0, 1] or null, got {self.time_mask_ratio}")
        if self.mask_value not in MASK_VALUES:
            raise ValueError(f"mask_value must be one of {', '.join(MASK_VALUES)}, got {self.mask_value!r}")
        self._validate_acoustics()

    def _validate_acoustics(self) -> None:
        for name in PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in RANGES:
            bounds = getattr(self, name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, got {list(bounds)}")
        for name in ("tempo_factors", "reverb_rt60_s", "vtlp_warp", "clip_ratio"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive numbers, got {list(getattr(self, name))}")
        if not self.pitch_semitones:
            raise ValueError("pitch_semitones must list at least one shift")
        if max(self.clip_ratio) > 1.0:
            raise ValueError(f"clip_ratio must be within (0, 1], got {list(self.clip_ratio)}")
        if self.band_limit_low_hz[1] >= self.band_limit_high_hz[0]:
            raise ValueError(
                f"band_limit_low_hz {list(self.band_limit_low_hz)} must lie below "
                f"band_limit_high_hz {list(self.band_limit_high_hz)}"
            )

    @property
    def needs_waveforms(self) -> bool:
        """Whether any waveform augmentation is on (features must then be computed on the fly)."""
        return self.speed_perturb or any(getattr(self, name) > 0 for name in WAVEFORM_PROBABILITIES)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, str), ready for YAML or JSON."""
        data = asdict(self)
        for name in ("noise_types", *NUMBER_TUPLES):
            data[name] = list(data[name])
        data["noise_dir"] = None if self.noise_dir is None else str(self.noise_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Build from a mapping such as a YAML section; unknown keys are an error."""
        known = [field.name for field in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown augment setting(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        return cls(**data)


# ----------------------------------------------------------------------------- SpecAugment


def _random_bands(
    extent: Tensor, max_width: Tensor, count: int, size: int, generator: torch.Generator | None
) -> Tensor:
    """``[B, size]`` boolean union of ``count`` bands per row, each of width 0..max_width[b]
    placed uniformly inside the first ``extent[b]`` positions."""
    device = extent.device
    shape = (extent.shape[0], count)
    width = (random_uniform(shape, generator, device) * (max_width[:, None] + 1)).long()
    width = torch.minimum(width, torch.minimum(max_width, extent)[:, None])
    room = extent[:, None] - width + 1
    start = torch.minimum((random_uniform(shape, generator, device) * room).long(), room - 1)
    axis = torch.arange(size, device=device)
    inside = (axis >= start[..., None]) & (axis < (start + width)[..., None])  # [B, count, size]
    return inside.any(dim=1)


def spec_augment(
    features: Tensor,
    lengths: Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment frequency and time masks (Park et al. 2019), without time warping.

    Frequency masks span an utterance's valid frames; time masks fall inside its valid
    length, each at most ``time_mask_width`` frames and ``time_mask_ratio`` of the length.
    Padding frames are left as they are.

    Args:
        features: ``[B, T, F]`` padded features.
        lengths: ``[B]`` valid frames per utterance.
        config: mask counts, widths and value (``spec_augment`` itself is not checked here).
        generator: source of randomness; ``None`` uses torch's global one.

    Returns:
        ``[B, T, F]`` new tensor; the input is not modified.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [batch, frames, bins], got shape {tuple(features.shape)}")
    batch_size, num_frames, num_bins = features.shape
    device = features.device
    lengths = torch.as_tensor(lengths, device=device).long().clamp(0, num_frames)
    valid = valid_mask(lengths, num_frames, device)

    all_bins = torch.full((batch_size,), num_bins, device=device)
    freq_width = torch.full((batch_size,), config.freq_mask_width, device=device)
    freq_mask = _random_bands(all_bins, freq_width, config.num_freq_masks, num_bins, generator)

    time_width = torch.full((batch_size,), config.time_mask_width, device=device)
    if config.time_mask_ratio is not None:
        time_width = torch.minimum(time_width, (lengths * config.time_mask_ratio).long())
    time_mask = _random_bands(lengths, time_width, config.num_time_masks, num_frames, generator)

    mask = (freq_mask[:, None, :] | time_mask[:, :, None]) & valid[:, :, None]
    if config.mask_value == "mean":
        total = (features * valid[:, :, None]).sum(dim=(1, 2))
        value = (total / (lengths * num_bins).clamp_min(1)).to(features.dtype)[:, None, None]
    else:
        value = features.new_zeros(())
    return torch.where(mask, value, features)


# ----------------------------------------------------------------------------- the augmenter


class Augmenter:
    """Applies the augmentations an :class:`AugmentConfig` switches on.

    Call it on waveforms; call :meth:`augment_features` (VTLP, then SpecAugment) on the
    features computed from them.

    Args:
        config: what to augment.
        sample_rate: the waveforms' sample rate.
        noise_bank: noise recordings for the ``file`` type; loaded from ``config.noise_dir``
            when not given and needed.
        fbank: the filterbank the features come from (VTLP needs its band edges); the default
            settings of :class:`pipeline.frontends.fbank.FbankConfig` when not given.
    """

    def __init__(
        self,
        config: AugmentConfig,
        sample_rate: int = SAMPLE_RATE,
        noise_bank: NoiseBank | None = None,
        fbank: FbankConfig | None = None,
    ) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.fbank = fbank or FbankConfig(sample_rate=sample_rate)
        if noise_bank is None and config.noise_prob > 0 and "file" in config.noise_types:
            noise_bank = NoiseBank(config.noise_dir, sample_rate)
        self.noise_bank = noise_bank

    def __call__(
        self,
        waveforms: Tensor,
        lengths: Tensor,
        generator: torch.Generator | None = None,
        babble_sources: BabbleSources | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Speed, tempo, pitch, reverberation, noise, gain, clipping, band-limit, telephone and
        codec, each as configured (each drawn per utterance with its probability).

        Args:
            waveforms: ``[B, S]`` padded batch.
            lengths: ``[B]`` valid samples per utterance.
            generator: source of randomness; ``None`` uses torch's global one.
            babble_sources: the talkers of a row's babble (called only for the rows that draw
                babble, so they can be loaded lazily); ``None``: other rows of the batch.

        Returns:
            ``([B, S'], [B])`` augmented batch and lengths (the inputs when nothing is on).
        """
        config = self.config
        if config.speed_perturb:
            choices = torch.tensor(config.speed_factors, dtype=torch.float64)
            pick = (random_uniform((waveforms.shape[0],), generator, "cpu") * len(choices)).long()
            factors = choices[pick.clamp_max(len(choices) - 1)]
            waveforms, lengths = acoustics.speed_perturb(waveforms, lengths, factors, self.sample_rate)
        batch_size = waveforms.shape[0]
        if config.tempo_prob > 0:
            factors = self._pick(config.tempo_factors, config.tempo_prob, 1.0, batch_size, generator)
            waveforms, lengths = acoustics.change_tempo(waveforms, lengths, factors)
        if config.pitch_prob > 0:
            steps = self._pick(config.pitch_semitones, config.pitch_prob, 0.0, batch_size, generator)
            waveforms = acoustics.pitch_shift(waveforms, lengths, steps, self.sample_rate)
        if config.reverb_prob > 0:
            waveforms = self._on_some(waveforms, lengths, config.reverb_prob, self._reverberate, generator)
        if config.noise_prob > 0:
            waveforms = self._add_noise(waveforms, lengths, generator, babble_sources)
        if config.gain_prob > 0:
            waveforms = self._on_some(waveforms, lengths, config.gain_prob, self._gain, generator)
        if config.clip_prob > 0:
            waveforms = self._on_some(waveforms, lengths, config.clip_prob, self._clip, generator)
        if config.band_limit_prob > 0:
            waveforms = self._on_some(waveforms, lengths, config.band_limit_prob, self._band_limit, generator)
        if config.telephone_prob > 0:
            telephone = lambda waves, valid, _: acoustics.telephone_channel(waves, valid, self.sample_rate)  # noqa: E731
            waveforms = self._on_some(waveforms, lengths, config.telephone_prob, telephone, generator)
        if config.codec_prob > 0:
            codec = lambda waves, valid, _: acoustics.mu_law_codec(waves, valid)  # noqa: E731
            waveforms = self._on_some(waveforms, lengths, config.codec_prob, codec, generator)
        return waveforms, lengths

    def augment_features(
        self, features: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """VTLP, then SpecAugment, as configured; the input itself when both are off."""
        config = self.config
        if config.vtlp_prob > 0:
            batch_size = features.shape[0]
            chosen = random_uniform((batch_size,), generator, "cpu") < config.vtlp_prob
            warp = random_between(config.vtlp_warp, batch_size, generator, "cpu")
            warp = torch.where(chosen, warp, torch.ones_like(warp))
            fbank = self.fbank
            features = acoustics.vtlp(
                features, lengths, warp, fbank.sample_rate, fbank.low_freq, fbank.high_freq
            )
        return self.spec_augment(features, lengths, generator)

    def spec_augment(
        self, features: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """:func:`spec_augment` with this config; the input itself when it is switched off."""
        if not self.config.spec_augment:
            return features
        return spec_augment(features, lengths, self.config, generator)

    @staticmethod
    def _pick(
        choices: tuple[float, ...],
        prob: float,
        identity: float,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``[B]``: with probability ``prob`` one of ``choices`` (uniformly), else ``identity``."""
        chosen = random_uniform((batch_size,), generator, "cpu") < prob
        pick = (random_uniform((batch_size,), generator, "cpu") * len(choices)).long()
        values = torch.tensor(choices, dtype=torch.float64)[pick.clamp_max(len(choices) - 1)]
        return torch.where(chosen, values, torch.full_like(values, identity))

    @staticmethod
    def _on_some(
        waveforms: Tensor, lengths: Tensor, prob: float, effect, generator: torch.Generator | None
    ) -> Tensor:
        """Apply ``effect(waveforms, lengths, generator)`` to the rows drawn with probability ``prob``."""
        device = waveforms.device
        chosen = (random_uniform((waveforms.shape[0],), generator, device) < prob).nonzero().squeeze(1)
        if chosen.numel() == 0:
            return waveforms
        lengths = torch.as_tensor(lengths, device=device)
        output = waveforms.clone()
        output[chosen] = effect(waveforms[chosen], lengths[chosen], generator).to(waveforms.dtype)
        return output

    def _reverberate(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        batch_size = waveforms.shape[0]
        rt60 = random_between(self.config.reverb_rt60_s, batch_size, generator, "cpu")
        ratio = random_between(self.config.reverb_drr_db, batch_size, generator, "cpu")
        rirs = acoustics.synthetic_rirs(rt60, ratio, self.sample_rate, generator, waveforms.device)
        return acoustics.reverberate(waveforms, lengths, rirs)

    def _gain(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        gain = random_between(self.config.gain_db, waveforms.shape[0], generator, waveforms.device)
        return acoustics.apply_gain(waveforms, gain)

    def _clip(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        ratio = random_between(self.config.clip_ratio, waveforms.shape[0], generator, waveforms.device)
        return acoustics.clip(waveforms, lengths, ratio)

    def _band_limit(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        batch_size = waveforms.shape[0]
        low = random_between(self.config.band_limit_low_hz, batch_size, generator, "cpu")
        high = random_between(self.config.band_limit_high_hz, batch_size, generator, "cpu")
        return acoustics.band_limit(
            waveforms, lengths, low, high.clamp_max(self.sample_rate / 2), self.sample_rate
        )

    def _add_noise(
        self, waveforms: Tensor, lengths: Tensor, generator: Generator, babble_sources: BabbleSources | None
    ) -> Tensor:
        config = self.config
        batch_size = waveforms.shape[0]
        device = waveforms.device
        lengths = torch.as_tensor(lengths, device=device).long()
        chosen = random_uniform((batch_size,), generator, device) < config.noise_prob
        low, high = config.snr_db
        snr_db = low + (high - low) * random_uniform((batch_size,), generator, device)
        kind_index = (random_uniform((batch_size,), generator, device) * len(config.noise_types)).long()
        noisy_rows = chosen.nonzero().squeeze(1)
        if noisy_rows.numel() == 0:
            return waveforms
        noise = torch.zeros_like(waveforms)
        for index, kind in enumerate(config.noise_types):
            rows = (chosen & (kind_index == index)).nonzero().squeeze(1)
            if rows.numel():
                kind_noise = self._noise(kind, waveforms, lengths, rows, generator, babble_sources)
                noise[rows] = kind_noise.to(noise.dtype)
        output = waveforms.clone()
        output[noisy_rows] = add_noise(
            waveforms[noisy_rows],
            lengths[noisy_rows],
            snr_db[noisy_rows],
            noise[noisy_rows],
            reference=config.snr_reference,
            sample_rate=self.sample_rate,
        )
        return output

    @staticmethod
    def _babble(talkers: Sequence[Tensor], size: int, generator: Generator, device: torch.device) -> Tensor:
        """One row's babble of ``talkers``; pink noise when there is none (as for a batch of one)."""
        if not talkers:
            return pink_noise((1, size), generator, device)[0]
        return mix_talkers(talkers, size, generator, device)

    def _noise(
        self, kind: str, waveforms: Tensor, lengths: Tensor, rows: Tensor, generator: Generator,
        babble_sources: BabbleSources | None,
    ) -> Tensor:  # fmt: skip
        shape = (rows.numel(), waveforms.shape[1])
        if kind == "white":
            return white_noise(shape, generator, waveforms.device)
        if kind == "pink":
            return pink_noise(shape, generator, waveforms.device)
        if kind == "household":
            return household_noise(shape, generator, waveforms.device, self.sample_rate)
        if kind == "babble" and babble_sources is not None:
            babble = torch.stack([self._babble(babble_sources(row), shape[1], generator, waveforms.device)
                                  for row in rows.tolist()])  # fmt: skip
            return babble * valid_mask(lengths[rows], shape[1], waveforms.device)
        if kind == "babble":
            return babble_noise(waveforms, lengths, generator, self.config.babble_speakers)[rows]
        if self.noise_bank is None:
            raise ValueError("noise type 'file' needs a noise bank (set noise_dir)")
        return self.noise_bank.sample(shape[0], shape[1], generator, waveforms.device)
