"""A frozen encoder's outputs, computed once per split and reused, so CPU training never runs it twice.

A student with a frozen bottom (``has_frozen_part``: the whisper family under every freeze mode
but ``none``, the hf family under ``freeze: encoder``) splits its forward pass in two::

    forward(features, lengths) == forward_from_frozen(*encode_frozen(features, lengths))

Without augmentation the frozen bottom gives the same output for an utterance in every epoch,
so training runs :meth:`encode_frozen` over each split once (batched, without gradients, on the
training device), keeps the states as float16 in a :class:`~pipeline.frontends.feature_store.FrameStore`
(the feature store's layout: ``meta.json``, ``index.json``, ``frames.f16``, ``.done``), and
then feeds batches of stored states to ``forward_from_frozen``. The model dir that training
writes is still the whole student, on front-end features.

A cache is named by what its content depends on (:func:`cache_fingerprint`): the family, the
student settings that shape the frozen part, the front-end config, the sha256 of the frozen
weights, and the audio it covers (:func:`~pipeline.frontends.feature_store.audio_sha256`: ids,
audio paths and durations, not labels, so label variants of one corpus share a cache). A rerun with the same inputs reuses it;
anything else builds a new one. Caches live beside the feature stores by default, so the runs
of one recipe (a CE-only and a distilled twin, several seeds) share them::

    <features>/frozen_<family>_<hash>/{train,valid}

Augmented copies (``train.cache_augmented_copies: N``) give a frozen-encoder student acoustic
variety at the cache's price: the train split is also stored N more times, each copy passed
through the config's *waveform* augmentation (reverberation, noise, gain, band-limit, telephone,
codec, speed, ...; SpecAugment and VTLP act on features and are not applied at cache time).
Every utterance of copy ``k`` gets its own generator, seeded by ``(k, utterance id)``
(:func:`utterance_seed`), so a copy is the same whatever the batching, the device's batch size or
the training seed; babble mixes in ``babble_speakers`` other train utterances drawn from that
same seed, read only for the utterances that draw babble. The copies sit beside the clean split,
named by the waveform augmentation settings (:func:`augmented_folder`); the clean ``train`` and
``valid`` caches keep their names, so turning copies on reuses them, and copy ``k`` is the same
for every N >= k::

    <features>/frozen_<family>_<hash>/train_augmented_<hash>/copy_<k>

In training, :class:`AugmentedCopies` serves each utterance one of its ``1 + N`` versions per
epoch: version ``(epoch + offset) mod (N + 1)`` (0 is clean), with a per-utterance ``offset``
seeded by the training seed and the utterance id (:func:`version_of`). Every epoch thus mixes
about ``1 / (N + 1)`` of each version, and N + 1 consecutive epochs show every utterance each of
its versions once. Valid stays clean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.augment.augmentation import AugmentConfig, Augmenter
from pipeline.core.config import to_dict
from pipeline.core.io import atomic_directory, is_done, mark_done, write_json
from pipeline.data.batching import (
    Batch,
    LengthBucketSampler,
    UtteranceDataset,
    WaveformDataset,
    collate,
    pad_sequences,
)
from pipeline.frontends.base import FrontEnd
from pipeline.frontends.feature_store import FRAMES_FILE, INDEX_FILE, META_FILE, FrameStore, audio_sha256

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
# student config fields that only shape the trainable top: a change keeps the cache valid
HEAD_FIELDS = frozenset({
    "num_intents", "teacher_dim", "ctc_vocab_size", "extra_layers", "extra_heads", "extra_feedforward",
    "dropout", "pooling", "pretrained", "slot_classes",
})  # fmt: skip

# augment settings that act on features (not applied at cache time): a change keeps the copies valid
FEATURE_AUGMENT_FIELDS = frozenset({
    "spec_augment", "num_freq_masks", "freq_mask_width", "num_time_masks", "time_mask_width", "time_mask_ratio",
    "mask_value", "vtlp_prob", "vtlp_warp",
})  # fmt: skip
# of the per-utterance augmentation scheme (seeds, babble partners); 2: the partners raw, read lazily
COPY_VERSION = 2

Inputs = Callable[[Batch], tuple[Tensor, Tensor]]  # a batch -> the student's normalised input features


class FrozenStates(FrameStore):
    """A finished cache of one split: the frozen bottom's states ``[encoder frames, hidden]`` per utterance."""

    kind, content, missing_hint = "frozen-encoder cache", "frozen states", "training writes it"


def has_frozen_part(student: nn.Module) -> bool:
    """Whether the student runs a frozen bottom apart (:meth:`encode_frozen` / :meth:`forward_from_frozen`)."""
    return bool(getattr(student, "has_frozen_part", False)) and hasattr(student, "forward_from_frozen")


def frozen_weights_sha256(student: nn.Module) -> str:
    """sha256 over every state entry that does not train (name, dtype, shape and bytes, by name)."""
    trainable = {name for name, parameter in student.named_parameters() if parameter.requires_grad}
    digest = hashlib.sha256()
    for name, tensor in sorted(student.state_dict().items()):
        if name in trainable:
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def frozen_settings(student: nn.Module) -> dict[str, Any]:
    """The student's config without the fields that only shape its trainable top."""
    config = json.loads(json.dumps(to_dict(student.config), default=str))
    return {key: value for key, value in sorted(config.items()) if key not in HEAD_FIELDS}


def cache_identity(student: nn.Module, frontend: FrontEnd, weights_sha256: str) -> dict[str, Any]:
    """What every split's cache of one frozen bottom depends on (the folder name hashes it)."""
    return {
        "version": CACHE_VERSION,
        "family": student.family,
        "student": frozen_settings(student),
        "frontend": frontend.to_config(),
        "frozen_sha256": weights_sha256,
    }


def cache_folder(root: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """``root/frozen_<family>_<12 hex digits of the identity>``."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return Path(root) / f"frozen_{identity['family']}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def cache_fingerprint(identity: dict[str, Any], dataset: UtteranceDataset, source: str) -> dict[str, Any]:
    """One split's fingerprint: the identity, the utterances' audio (ids, resolved paths and
    durations; not the labels) and where the inputs came from."""
    return {**identity, "audio_sha256": audio_sha256(dataset.manifest), "inputs": source}


def build_frozen_states(student: nn.Module, inputs: Inputs, dataset: UtteranceDataset, lengths: Sequence[int],
                        folder: Path, fingerprint: dict[str, Any], max_frames: int, num_workers: int = 0,
                        show_progress: bool = True) -> FrozenStates:  # fmt: skip
    """Run the student's frozen bottom over ``dataset`` once and store the states (or reuse a cache).

    Args:
        student: on the device ``inputs`` puts the features on.
        inputs: a batch -> the student's normalised features (no augmentation).
        dataset: the split (store features or waveforms).
        lengths: per utterance, the length the batches are capped by (as in training).
        folder: the split's cache folder.
        fingerprint: :func:`cache_fingerprint`; a finished cache with the same one is reused.
        max_frames: padded input frames per batch.
        num_workers: DataLoader processes.
        show_progress: a tqdm bar.
    """
    if is_done(folder, fingerprint):
        logger.info("%s: frozen %s encoder states up to date, reusing them", folder, student.family)
        return FrozenStates(folder)
    # Iterating a DataLoader draws from torch's global generator: keep it as it was, so a run's
    # dropout masks do not depend on whether this process built the cache or found it.
    with torch.random.fork_rng(devices=[]):
        return _build(
            student, inputs, dataset, lengths, folder, fingerprint, max_frames, num_workers, show_progress
        )


def _build(student: nn.Module, inputs: Inputs, dataset: UtteranceDataset, lengths: Sequence[int], folder: Path,
           fingerprint: dict[str, Any], max_frames: int, num_workers: int, show_progress: bool) -> FrozenStates:  # fmt: skip
    was_training = student.training
    student.eval()
    sampler = LengthBucketSampler(lengths, max_frames, shuffle=False)  # length-sorted: little padding
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    ids: list[str] = []
    offsets: list[int] = []
    frame_counts: list[int] = []
    position, width, start = 0, 0, time.monotonic()
    try:
        with atomic_directory(folder) as temporary, open(temporary / FRAMES_FILE, "wb") as frames_file:
            progress = tqdm(loader, desc=f"frozen {student.family} encoder", unit="batch",
                            disable=not show_progress, leave=False)  # fmt: skip
            for batch in progress:
                features, feature_lengths = inputs(batch)
                with torch.no_grad():
                    states, frames = student.encode_frozen(features, feature_lengths)
                host, frames = states.to(torch.float16).cpu().numpy(), frames.cpu().tolist()
                width = host.shape[-1]
                for row, utterance_id in enumerate(batch.ids):
                    frames_file.write(host[row, : frames[row]].tobytes())
                    ids.append(utterance_id)
                    offsets.append(position)
                    frame_counts.append(int(frames[row]))
                    position += int(frames[row])
            frames_file.close()
            seconds = time.monotonic() - start
            audio_hours = dataset.manifest.total_duration / 3600
            meta = {
                **fingerprint,
                "num_utterances": len(ids),
                "total_frames": position,
                "feature_dim": width,
                "dtype": "float16",
                "seconds": round(seconds, 2),
                "audio_hours": round(audio_hours, 4),
            }
            write_json(temporary / META_FILE, meta)
            write_json(temporary / INDEX_FILE, {"ids": ids, "offsets": offsets, "frames": frame_counts})
            mark_done(temporary, fingerprint)
    finally:
        student.train(was_training)
    logger.info(
        "%s: frozen %s encoder states of %d utterances (%.2f h of audio) in %.1f s (%.0fx real time)",
        folder, student.family, len(ids), audio_hours, seconds, audio_hours * 3600 / max(seconds, 1e-9),
    )  # fmt: skip
    return FrozenStates(folder)


# ----------------------------------------------------------------------------- augmented copies


def utterance_seed(copy: int, utterance_id: str, salt: str = "copy") -> int:
    """A 63-bit seed for one utterance in one copy (or, with another ``salt``, any per-utterance draw)."""
    digest = hashlib.sha256(f"{salt}:{copy}:{utterance_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def waveform_augment_settings(augment: AugmentConfig) -> dict[str, Any]:
    """The augment settings that shape a copy: all but the feature augmentations (SpecAugment, VTLP)."""
    return {
        key: value for key, value in sorted(augment.to_dict().items()) if key not in FEATURE_AUGMENT_FIELDS
    }


def augmented_folder(root: str | os.PathLike, augment: AugmentConfig) -> Path:
    """``root/train_augmented_<12 hex digits of the waveform augment settings>`` (holds ``copy_<k>``)."""
    text = json.dumps({"version": COPY_VERSION, **waveform_augment_settings(augment)}, sort_keys=True)
    return Path(root) / f"train_augmented_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def copy_fingerprint(fingerprint: dict[str, Any], augment: AugmentConfig, copy: int) -> dict[str, Any]:
    """Copy ``copy``'s fingerprint: the clean split's, plus the waveform augment settings and the copy."""
    return {
        **fingerprint,
        "augment": waveform_augment_settings(augment),
        "copy": copy,
        "copy_version": COPY_VERSION,
    }


class CopyAugmentation:
    """Copy ``copy``'s waveform augmentation of a batch, drawn per utterance from :func:`utterance_seed`.

    Each utterance is augmented on its own, so its result does not depend on the batch it comes
    in. When it draws babble, ``babble_speakers`` partner utterances of the split, drawn from its
    seed, are read then (and only then) and mixed as they are, unaugmented.

    Args:
        augmenter: the config's augmentation (only its waveform part is used).
        copy: the copy number (1-based; 0 is the clean split).
        waveforms: the split's audio, for babble partners.
    """

    def __init__(self, augmenter: Augmenter, copy: int, waveforms: WaveformDataset) -> None:
        config = augmenter.config
        self.augmenter, self.copy, self.waveforms = augmenter, copy, waveforms
        babble = config.noise_prob > 0 and "babble" in config.noise_types
        self.partners = min(config.babble_speakers, len(waveforms) - 1) if babble else 0
        self.position = {utterance.id: i for i, utterance in enumerate(waveforms.manifest)}

    def __call__(self, waveforms: Tensor, lengths: Tensor, ids: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``([B, S'], [B])`` augmented padded waveforms (on ``waveforms``' device) and their lengths."""
        rows = []
        for row, utterance_id in enumerate(ids):
            seed = utterance_seed(self.copy, utterance_id)
            length = int(lengths[row])
            generator = torch.Generator().manual_seed(seed)
            # the utterance alone; its babble partners are read only if it draws babble
            augmented, augmented_lengths = self.augmenter(
                waveforms[row : row + 1, :length], lengths[row : row + 1], generator,
                babble_sources=lambda _row, uid=utterance_id, seed=seed: self._partners(uid, seed),
            )  # fmt: skip
            rows.append(augmented[0, : int(augmented_lengths[0])].cpu())
        padded, new_lengths = pad_sequences(rows, dtype=torch.float32)
        return padded.to(waveforms.device), new_lengths.to(waveforms.device)

    def _partners(self, utterance_id: str, seed: int) -> list[Tensor]:
        """``partners`` other utterances of the split, drawn from the utterance's seed."""
        if not self.partners:
            return []
        own = self.position[utterance_id]
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(self.waveforms) - 1, self.partners, replace=False)
        waves = []
        for pick in picks.tolist():
            item = self.waveforms[pick + (pick >= own)]  # skip the utterance itself
            waves.append(item.waveform if not item.error else torch.zeros(1))
        return waves


def version_of(utterance_id: str, epoch: int, seed: int, versions: int) -> int:
    """Which of an utterance's ``versions`` (0 clean, k copy k) training reads in ``epoch``:
    ``(epoch + offset) mod versions``, with ``offset`` seeded by ``(seed, utterance id)``."""
    return (epoch + utterance_seed(seed, utterance_id, salt="version")) % versions


class AugmentedCopies:
    """One split's clean cache and its augmented copies as one feature source (see the module
    docstring): :meth:`set_epoch` picks, per utterance, the version its frames come from.

    Args:
        versions: the clean cache first, then copy 1, 2, ...
        seed: the training seed (it shifts which version an utterance reads in which epoch).
    """

    def __init__(self, versions: Sequence[FrozenStates], seed: int = 0) -> None:
        if not versions:
            raise ValueError("AugmentedCopies needs at least the clean cache")
        self.versions, self.seed, self.epoch = list(versions), seed, 0
        self.folder = self.versions[0].folder

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def version(self, utterance_id: str) -> int:
        """The version ``utterance_id`` reads in the current epoch."""
        return version_of(utterance_id, self.epoch, self.seed, len(self.versions))

    def __len__(self) -> int:
        return len(self.versions[0])

    def __contains__(self, utterance_id: object) -> bool:
        return all(utterance_id in version for version in self.versions)

    def frame_count(self, utterance_id: str) -> int:
        return self.versions[self.version(utterance_id)].frame_count(utterance_id)

    def features(self, utterance_id: str) -> Tensor:
        return self.versions[self.version(utterance_id)].features(utterance_id)


__all__ = [
    "CACHE_VERSION",
    "AugmentedCopies",
    "CopyAugmentation",
    "FrozenStates",
    "augmented_folder",
    "build_frozen_states",
    "cache_fingerprint",
    "cache_folder",
    "cache_identity",
    "copy_fingerprint",
    "frozen_settings",
    "frozen_weights_sha256",
    "has_frozen_part",
    "utterance_seed",
    "version_of",
    "waveform_augment_settings",
]
