"""Augmented copies of the frozen-encoder cache (pipeline.training.encoder_cache): per-utterance seeded
waveform augmentation that does not depend on the batching, the copies' names and fingerprints,
and which version of an utterance each epoch reads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from train_fixtures import make_corpus

from pipeline.augment.augmentation import AugmentConfig, Augmenter
from pipeline.data.batching import UtteranceDataset, WaveformDataset, pad_sequences
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.training.encoder_cache import (
    CopyAugmentation,
    augmented_folder,
    cache_fingerprint,
    copy_fingerprint,
    version_of,
    waveform_augment_settings,
)

ROBUST = AugmentConfig(
    reverb_prob=0.6, telephone_prob=0.3, band_limit_prob=0.3, codec_prob=0.3, gain_prob=0.5,
    noise_prob=0.7, noise_types=("white", "babble"), snr_db=(5.0, 20.0), speed_perturb=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def waveforms(tmp_path_factory) -> WaveformDataset:
    corpus = make_corpus(tmp_path_factory.mktemp("encoder_cache"))
    return WaveformDataset(read_manifest(corpus / "manifests/train.jsonl"))


def batch_of(dataset: WaveformDataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    waves, lengths = pad_sequences([dataset[i].waveform for i in indices], dtype=torch.float32)
    return waves, lengths, [dataset.manifest[i].id for i in indices]


def rows(waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    return [waves[row, : int(lengths[row])] for row in range(len(lengths))]


def test_a_copy_is_drawn_per_utterance_whatever_the_batching(waveforms):
    augmenter = Augmenter(ROBUST)
    indices = [0, 5, 9, 14]
    together = rows(*CopyAugmentation(augmenter, 1, waveforms)(*batch_of(waveforms, indices)))
    shuffled = rows(*CopyAugmentation(augmenter, 1, waveforms)(*batch_of(waveforms, indices[::-1])))
    alone = [rows(*CopyAugmentation(augmenter, 1, waveforms)(*batch_of(waveforms, [i])))[0] for i in indices]
    for one, other, single in zip(together, shuffled[::-1], alone, strict=True):
        assert torch.equal(one, other) and torch.equal(one, single)

    second = rows(*CopyAugmentation(augmenter, 2, waveforms)(*batch_of(waveforms, indices)))
    clean = [waveforms[i].waveform for i in indices]
    for copy_1, copy_2, original in zip(together, second, clean, strict=True):
        for augmented in (
            copy_1,
            copy_2,
        ):  # with these probabilities and seeds, every copy changes every one
            assert augmented.shape != original.shape or not torch.allclose(augmented, original, atol=1e-4)
        assert copy_1.shape != copy_2.shape or not torch.allclose(copy_1, copy_2, atol=1e-4)
        assert torch.isfinite(copy_1).all() and torch.isfinite(copy_2).all()


def test_babble_comes_from_other_utterances_even_for_a_batch_of_one(waveforms):
    augmenter = Augmenter(AugmentConfig(noise_prob=1.0, noise_types=("babble",), snr_db=(0.0, 0.0)))
    own = waveforms[3].waveform
    (noisy,) = rows(*CopyAugmentation(augmenter, 1, waveforms)(*batch_of(waveforms, [3])))
    (again,) = rows(*CopyAugmentation(augmenter, 1, waveforms)(*batch_of(waveforms, [3, 4])))[:1]
    assert noisy.shape == own.shape and torch.equal(noisy, again)
    babble = noisy - own  # at 0 dB, as loud as the utterance
    assert float(babble.pow(2).mean().sqrt()) == pytest.approx(float(own.pow(2).mean().sqrt()), rel=0.05)


def test_copy_names_follow_the_waveform_augmentation_only(tmp_path):
    base = augmented_folder(tmp_path, ROBUST)
    assert base.parent == tmp_path and base.name.startswith("train_augmented_")
    features_only = AugmentConfig(**{**ROBUST.to_dict(), "spec_augment": True, "vtlp_prob": 0.5})
    assert augmented_folder(tmp_path, features_only) == base  # not applied at cache time
    assert augmented_folder(tmp_path, AugmentConfig(**{**ROBUST.to_dict(), "reverb_prob": 0.5})) != base
    settings = waveform_augment_settings(ROBUST)
    assert "spec_augment" not in settings and settings["reverb_prob"] == 0.6
    fingerprint = copy_fingerprint({"family": "whisper"}, ROBUST, 2)
    assert (
        fingerprint["copy"] == 2 and fingerprint["augment"] == settings and fingerprint["family"] == "whisper"
    )


@pytest.mark.parametrize("versions", [2, 3, 5])
def test_each_epoch_mixes_the_versions_and_every_utterance_cycles_through_them(versions):
    ids = [f"utt{i:03d}" for i in range(300)]
    for epoch in range(1, versions + 1):
        counts = [0] * versions
        for utterance in ids:
            counts[version_of(utterance, epoch, 0, versions)] += 1
        assert min(counts) > len(ids) / versions / 2  # roughly even
    for utterance in ids[:20]:
        seen = {version_of(utterance, epoch, 0, versions) for epoch in range(7, 7 + versions)}
        assert seen == set(range(versions))
    assert [version_of(u, 1, 0, versions) for u in ids] == [version_of(u, 1, 0, versions) for u in ids]
    assert [version_of(u, 1, 0, versions) for u in ids] != [version_of(u, 1, 1, versions) for u in ids]


def test_the_cache_follows_the_audio_not_the_labels(waveforms, tmp_path):
    """Label variants of one corpus (other intents, slots, transcripts; another folder) share a cache."""
    manifest = waveforms.manifest
    labels = LabelSet.load(manifest.path.parent / "labels.json")
    identity = {"family": "whisper", "frozen_sha256": "0" * 64}
    base = cache_fingerprint(identity, UtteranceDataset(manifest, labels, None), "waveforms")
    variant = Manifest(
        [dataclasses.replace(u, audio=str(manifest.audio_path(u)), intent="coffee", transcript="", slots={})
         for u in manifest],
        tmp_path / "elsewhere" / "train.jsonl",
    )  # fmt: skip
    assert (
        cache_fingerprint(identity, UtteranceDataset(variant, LabelSet(["coffee"]), None), "waveforms")
        == base
    )
    fewer = Manifest(variant.utterances[1:], variant.path)
    assert (
        cache_fingerprint(identity, UtteranceDataset(fewer, LabelSet(["coffee"]), None), "waveforms") != base
    )
