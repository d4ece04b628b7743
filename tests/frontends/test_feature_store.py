"""pipeline.frontends.feature_store: round trip, CMVN, idempotence, rebuilds, torchrun, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from pipeline.cli.main import main as slukd
from pipeline.data.audio import load_audio
from pipeline.data.manifest import Utterance, read_manifest, write_manifest
from pipeline.frontends.fbank import FbankConfig, FbankExtractor
from pipeline.frontends.feature_store import (
    ExtractionOptions,
    FeatureStore,
    FeatureStoreError,
    compute_feature_store,
    store_fingerprint,
)
from tests.audio_fixtures import tone_corpus

OPTIONS = ExtractionOptions(device="cpu", batch_seconds=6.0, num_workers=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tone_corpus(tmp_path_factory.mktemp("tones"), count=14)


@pytest.fixture(scope="module")
def store(corpus, tmp_path_factory):
    return compute_feature_store(corpus, tmp_path_factory.mktemp("stores") / "train", options=OPTIONS)


def test_round_trip(corpus, store):
    manifest = read_manifest(corpus)
    extractor = FbankExtractor()
    assert len(store) == len(manifest) and store.meta["num_utterances"] == len(manifest)
    assert store.frames.dtype == np.float16 and store.frames.shape == (store.meta["total_frames"], 80)
    for utterance in manifest:
        expected = extractor.extract(torch.from_numpy(load_audio(manifest.audio_path(utterance))))
        stored = store.features(utterance.id)  # raw: the store never normalises
        assert stored.shape == expected.shape
        torch.testing.assert_close(stored, expected, atol=0.02, rtol=2e-3)  # float16 storage
    assert {p.name for p in store.folder.iterdir()} == {".done", "meta.json", "index.json", "frames.f16"}
    with pytest.raises(FeatureStoreError, match="no features for utterance 'nope'"):
        store.frames_of("nope")


def test_cmvn_matches_a_direct_computation(corpus, store):
    manifest = read_manifest(corpus)
    extractor = FbankExtractor()
    every = torch.cat(
        [extractor.extract(torch.from_numpy(load_audio(manifest.audio_path(u)))) for u in manifest]
    )
    every = every.double().numpy()
    assert store.meta["cmvn"]["frames"] == every.shape[0]
    statistics = store.statistics
    np.testing.assert_allclose(statistics["mean"], every.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(statistics["std"], every.std(0), rtol=1e-4, atol=1e-4)
    frontend = store.frontend.with_statistics(statistics)
    normalised = torch.cat(
        [
            frontend.normalize(store.features(u.id)[None], torch.tensor([store.frame_count(u.id)]))[0]
            for u in manifest
        ]
    ).numpy()
    np.testing.assert_allclose(normalised.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(normalised.std(0), 1.0, atol=0.02)


def test_rerun_skips_and_changes_rebuild(corpus, tmp_path, caplog):
    out = tmp_path / "store"
    compute_feature_store(corpus, out, options=OPTIONS)
    stamp = (out / "frames.f16").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        compute_feature_store(corpus, out, options=OPTIONS)
    assert "up to date, skipping" in caplog.text
    assert (out / "frames.f16").stat().st_mtime_ns == stamp

    rebuilt = compute_feature_store(corpus, out, FbankConfig(num_mel_bins=40), OPTIONS)
    assert rebuilt.frames.shape[1] == 40
    with pytest.raises(FeatureStoreError, match="num_mel_bins 40 != 80"):
        rebuilt.check_compatible(FbankConfig())

    manifest = read_manifest(corpus)
    smaller = tmp_path / "smaller" / "data.jsonl"
    smaller.parent.mkdir()
    for utterance in manifest:
        utterance.audio = str(manifest.audio_path(utterance))
    write_manifest(smaller, manifest.utterances[:5])
    shutil.copytree(out, tmp_path / "copy")
    with pytest.raises(FeatureStoreError, match="other audio than"):
        FeatureStore(tmp_path / "copy").check_compatible(FbankConfig(num_mel_bins=40), smaller)
    assert len(compute_feature_store(smaller, out, FbankConfig(num_mel_bins=40), OPTIONS)) == 5


def test_label_variants_of_one_corpus_share_the_store(corpus, tmp_path, caplog):
    """The store is keyed by the audio (ids, resolved paths, durations), not by the labels."""
    out = tmp_path / "store"
    compute_feature_store(corpus, out, options=OPTIONS)
    stamp = (out / "frames.f16").stat().st_mtime_ns
    manifest = read_manifest(corpus)
    relabelled = tmp_path / "relabelled" / "data.jsonl"  # another folder: absolute audio paths
    relabelled.parent.mkdir()
    for utterance in manifest:
        utterance.audio = str(manifest.audio_path(utterance))
        utterance.intent, utterance.transcript, utterance.slots = "other_intent", "", {"size": "large"}
    write_manifest(relabelled, manifest.utterances)
    assert store_fingerprint(FbankConfig(), relabelled) == store_fingerprint(FbankConfig(), corpus)
    with caplog.at_level(logging.INFO):
        compute_feature_store(relabelled, out, options=OPTIONS).check_compatible(FbankConfig(), relabelled)
    assert "up to date, skipping" in caplog.text and (out / "frames.f16").stat().st_mtime_ns == stamp
    manifest.utterances[0].duration += 0.5  # other audio: another store
    write_manifest(relabelled, manifest.utterances)
    assert store_fingerprint(FbankConfig(), relabelled) != store_fingerprint(FbankConfig(), corpus)


def test_torchrun_two_processes_is_byte_identical(corpus, store, tmp_path):
    out = tmp_path / "distributed"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "pipeline.cli.main", "features", "--manifest", str(corpus), "--out", str(out),
        "--device", "cpu", "--batch-seconds", "6", "--num-workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 1 of 2 joined (gloo)" in result.stderr
    for name in ("frames.f16", "index.json", "meta.json"):
        assert (out / name).read_bytes() == (store.folder / name).read_bytes(), name
    assert not any(p.name.endswith(".shards") for p in tmp_path.iterdir())


@pytest.fixture
def messy_corpus(tmp_path):
    """Every kind of bad or unusual file a long extraction meets."""
    rng = np.random.default_rng(5)
    speech = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    files = {
        "good.wav": (speech, 16000, "PCM_16"),
        "stereo.wav": (np.stack([speech, -speech], 1), 16000, "PCM_16"),
        "narrow.wav": (speech[::2], 8000, "PCM_16"),
        "cd.flac": ((0.1 * rng.standard_normal(44100)).astype(np.float32), 44100, "PCM_16"),
        "silent.wav": (np.zeros(8000, np.float32), 16000, "PCM_16"),
        "empty.wav": (np.zeros(0, np.float32), 16000, "PCM_16"),
        "nan.wav": (np.where(np.arange(16000) == 7, np.nan, speech).astype(np.float32), 16000, "FLOAT"),
    }
    for name, (samples, rate, subtype) in files.items():
        soundfile.write(str(tmp_path / name), samples, rate, subtype=subtype)
    (tmp_path / "garbage.wav").write_bytes(b"\x00\x01 definitely not audio" * 50)
    names = list(files) + ["garbage.wav"]
    utterances = [Utterance(name.split(".")[0], name, 1.0, 16000, "text", "intent") for name in names]
    utterances.append(Utterance("missing", "missing.wav", 1.0, 16000, "text", "intent"))
    return write_manifest(tmp_path / "data.jsonl", utterances)


def test_bad_files_are_skipped_and_listed(messy_corpus, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        store = compute_feature_store(messy_corpus, tmp_path / "store", options=OPTIONS)
    assert sorted(store.ids) == ["cd", "good", "narrow", "stereo"]
    skipped = {entry["id"]: entry["error"] for entry in store.meta["skipped"]}
    assert set(skipped) == {"silent", "empty", "nan", "garbage", "missing"}
    assert "silent" in skipped["silent"] and "empty" in skipped["empty"] and "NaN" in skipped["nan"]
    assert "cannot read audio" in skipped["garbage"] and "not found" in skipped["missing"]
    assert store.meta["notes"] == {"mixed": 1, "resampled": 2}
    assert "resampled 8000 Hz to 16000 Hz" in caplog.text and "skipped 5 unusable file(s)" in caplog.text
    assert store.frames_of("narrow").shape[0] == store.frames_of("good").shape[0] == 98
    # The stereo file is (s + -s) / 2 = silence after mix-down: Kaldi's floor, finite everywhere.
    assert np.isfinite(store.frames_of("stereo").astype(np.float32)).all()


def test_strict_stops_and_keeps_the_old_store(messy_corpus, corpus, tmp_path):
    out = tmp_path / "store"
    compute_feature_store(corpus, out, options=OPTIONS)
    before = (out / "frames.f16").read_bytes()
    strict = ExtractionOptions(device="cpu", batch_seconds=6.0, num_workers=0, strict=True)
    with pytest.raises(FeatureStoreError, match=r"--strict"):
        compute_feature_store(messy_corpus, out, options=strict)
    assert (out / "frames.f16").read_bytes() == before  # nothing half-written, nothing lost
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".store")]  # no leftovers


def test_cli_one_line_errors(messy_corpus, corpus, tmp_path, caplog):
    assert slukd(["features", "--manifest", str(messy_corpus), "--out", str(tmp_path / "s"),
                  "--strict", "--num-workers", "0"]) == 1  # fmt: skip
    assert "--strict" in caplog.text
    assert (
        slukd(["features", "--manifest", str(corpus), "--out", str(tmp_path / "s"), "--set", "num_bins=3"])
        == 2
    )
    assert "unknown FbankConfig key(s) num_bins" in caplog.text
    config = tmp_path / "conf.yaml"
    config.write_text(json.dumps({"features": {"num_mel_bins": 24}}))
    assert slukd(["features", "--manifest", str(corpus), "--out", str(tmp_path / "s"), "--config", str(config),
                  "--num-workers", "1", "--batch-seconds", "5"]) == 0  # fmt: skip
    assert FeatureStore(tmp_path / "s").frames.shape[1] == 24
