"""The evaluation's robustness conditions: clean, noise at an SNR, a reverberant room, a telephone.

``slukd evaluate`` scores an audio-in model once per condition. Every condition is seeded per
utterance from (seed, condition name, utterance id) by :func:`condition_generator`, so a rerun
gives the same numbers whatever the batching. The noise and the acoustics are the same code the
training augmentation uses (:mod:`pipeline.augment.noise`, :mod:`pipeline.augment.acoustics`):

- ``white_<snr>dB``: white noise at exactly that SNR over the utterance's own samples;
  ``pink_<snr>dB`` and ``household_<snr>dB`` (:func:`pipeline.augment.noise.household_noise`: a
  drifting bed, a motor's hum, clatter) likewise; a ``_peak`` suffix (``white_12dB_peak``) means
  the SNR is taken on the loudest 25 ms frame, as noisy-command benchmarks mix;
- ``babble_<snr>dB``: the sum of three other utterances from a fixed, seeded
  :class:`BabbleBank` of the split, at that SNR;
- ``reverb_rt60_<low>-<high>``: a synthetic room impulse response (Polack's model) with RT60
  and direct-to-reverberant ratio drawn per utterance, uniform in the range and in
  :data:`REVERB_DRR_DB`; length and level kept;
- ``telephone``: 300-3400 Hz, 8 kHz sampling, G.711 mu-law, back to the model's rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from pipeline.augment import acoustics
from pipeline.augment.noise import (
    add_noise,
    household_noise,
    mix_talkers,
    pink_noise,
    random_between,
    white_noise,
)
from pipeline.data.audio import SAMPLE_RATE, AudioError
from pipeline.data.batching import WaveformDataset
from pipeline.data.manifest import Manifest

SWEEP_NOISE_TYPES = ("white", "pink", "household", "babble")  # additive noises of the SNR sweep
BABBLE_SPEAKERS = 3
REVERB_DRR_DB = (0.0, 10.0)  # direct-to-reverberant ratios of the reverberant condition


class NoiseCondition(NamedTuple):
    """One evaluation condition.

    Attributes:
        noise: ``clean``, an additive noise of :data:`SWEEP_NOISE_TYPES`, ``reverb`` or ``telephone``.
        snr_db: the SNR of an additive noise; ``None`` for the others.
        rt60_s: the (low, high) RT60 range of ``reverb``; ``None`` for the others.
        reference: the signal power the SNR is taken on: ``mean`` or ``peak`` (loudest frame).
    """

    noise: str
    snr_db: float | None = None
    rt60_s: tuple[float, float] | None = None
    reference: str = "mean"

    @property
    def name(self) -> str:
        if self.snr_db is not None:
            return f"{self.noise}_{self.snr_db:g}dB" + ("_peak" if self.reference == "peak" else "")
        if self.rt60_s is not None:
            return f"{self.noise}_rt60_{self.rt60_s[0]:g}-{self.rt60_s[1]:g}"
        return self.noise


class ConditionSettings(Protocol):
    """The settings :func:`noise_conditions` reads (``pipeline.evaluation.evaluate.EvaluateConfig`` has them)."""

    snrs: tuple[float, ...]
    noise_types: tuple[str, ...]
    snr_reference: str
    noise: bool
    reverb: bool
    reverb_rt60_s: tuple[float, float]
    telephone: bool


def noise_conditions(config: ConditionSettings) -> list[NoiseCondition]:
    """Clean first; with ``config.noise``, every noise type at every SNR (highest first), then the
    reverberant room and the telephone channel when they are switched on."""
    conditions = [NoiseCondition("clean")]
    if not config.noise:
        return conditions
    for noise in config.noise_types:
        conditions += [NoiseCondition(noise, snr, reference=config.snr_reference)
                       for snr in sorted(config.snrs, reverse=True)]  # fmt: skip
    if config.reverb:
        conditions.append(NoiseCondition("reverb", rt60_s=tuple(config.reverb_rt60_s)))
    if config.telephone:
        conditions.append(NoiseCondition("telephone"))
    return conditions


def condition_generator(seed: int, condition: NoiseCondition, utterance_id: str) -> torch.Generator:
    """A CPU generator seeded from (seed, condition, utterance id): independent of batching."""
    digest = hashlib.sha256(f"{seed}|{condition.name}|{utterance_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class BabbleBank:
    """A fixed, seeded set of the split's utterances, each scaled to unit RMS, to build babble from.

    Args:
        manifest: the utterances to draw the bank from.
        size: how many of them the bank holds.
        seed: the seed of the draw.
        sample_rate: of the clips.
        speakers: how many bank clips one babble sums (:data:`BABBLE_SPEAKERS` by default; a crowd,
            such as a cafe's, is more and each is less intelligible).

    Raises:
        AudioError: an utterance of the bank cannot be read (the message names the file).
    """

    def __init__(self, manifest: Manifest, size: int, seed: int, sample_rate: int = SAMPLE_RATE,
                 speakers: int = BABBLE_SPEAKERS) -> None:  # fmt: skip
        if speakers < 1:
            raise ValueError(f"babble needs at least 1 speaker, got {speakers}")
        self.speakers = speakers
        order = np.random.default_rng([seed, 7]).permutation(len(manifest))[: max(size, speakers + 1)]
        dataset = WaveformDataset(manifest, sample_rate)
        self.ids: list[str] = []
        self.clips: list[Tensor] = []
        for index in sorted(order.tolist()):
            item = dataset[index]
            if item.error:
                raise AudioError(item.error)
            clip = item.waveform.float()
            self.ids.append(manifest[index].id)
            self.clips.append(clip / clip.pow(2).mean().sqrt().clamp_min(1e-12))

    def babble(self, utterance_id: str, num_samples: int, generator: torch.Generator) -> Tensor:
        """The sum of :attr:`speakers` bank clips other than the utterance itself, tiled."""
        candidates = [i for i, other in enumerate(self.ids) if other != utterance_id]
        scores = torch.rand(len(candidates), generator=generator)
        chosen = [candidates[i] for i in scores.topk(min(self.speakers, len(candidates))).indices.tolist()]
        return mix_talkers([self.clips[index] for index in chosen], num_samples, generator)


def condition_rirs(
    ids: Sequence[str], condition: NoiseCondition, seed: int, sample_rate: int = SAMPLE_RATE
) -> Tensor:
    """``[B, L]`` room impulse responses of a ``reverb`` condition, one per utterance id (seeded
    per utterance: RT60 and direct-to-reverberant ratio uniform in their ranges)."""
    if condition.rt60_s is None:
        raise ValueError(f"condition {condition.name!r} has no RT60 range")
    low, high = condition.rt60_s
    responses = []
    for utterance_id in ids:
        generator = condition_generator(seed, condition, utterance_id)
        rt60 = random_between((low, high), 1, generator, "cpu")
        ratio = random_between(REVERB_DRR_DB, 1, generator, "cpu")
        responses.append(acoustics.synthetic_rirs(rt60, ratio, sample_rate, generator)[0])
    width = max(len(response) for response in responses)
    return torch.stack(
        [torch.nn.functional.pad(response, (0, width - len(response))) for response in responses]
    )


def noisy_waveforms(waveforms: Tensor, lengths: Tensor, ids: Sequence[str], condition: NoiseCondition,
                    seed: int, babble_bank: BabbleBank | None = None,
                    sample_rate: int = SAMPLE_RATE) -> Tensor:  # fmt: skip
    """The batch under the condition: noise mixed in at its SNR over each utterance's own samples,
    the room's reverberation, or the telephone channel. Lengths are kept.

    Args:
        waveforms: ``[B, S]`` padded clean batch.
        lengths: ``[B]`` valid samples.
        ids: utterance ids (they seed the noise and the rooms).
        condition: the condition (``clean`` returns the batch unchanged).
        seed: the evaluation seed.
        babble_bank: needed for babble.
        sample_rate: the batch's rate.
    """
    if condition.noise == "clean":
        return waveforms
    if condition.noise == "reverb":
        rirs = condition_rirs(ids, condition, seed, sample_rate).to(waveforms.device)
        return acoustics.reverberate(waveforms, lengths, rirs)
    if condition.noise == "telephone":
        return acoustics.telephone_channel(waveforms, lengths, sample_rate)
    noise = torch.zeros_like(waveforms, dtype=torch.float32)
    for row, (utterance_id, length) in enumerate(zip(ids, lengths.tolist(), strict=True)):
        generator = condition_generator(seed, condition, utterance_id)
        if condition.noise == "white":
            noise[row, :length] = white_noise((length,), generator)
        elif condition.noise == "pink":
            noise[row, :length] = pink_noise((1, length), generator)[0]
        elif condition.noise == "household":
            noise[row, :length] = household_noise((1, length), generator, sample_rate=sample_rate)[0]
        elif condition.noise == "babble":
            if babble_bank is None:
                raise ValueError("babble noise needs a BabbleBank")
            noise[row, :length] = babble_bank.babble(utterance_id, length, generator)
        else:
            kinds = ", ".join(("clean", *SWEEP_NOISE_TYPES, "reverb", "telephone"))
            raise ValueError(f"unknown condition {condition.noise!r}; choose from {kinds}")
    return add_noise(waveforms, lengths, float(condition.snr_db), noise.to(waveforms.device),
                     reference=condition.reference, sample_rate=sample_rate)  # fmt: skip
