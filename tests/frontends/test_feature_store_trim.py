"""Trimming in the feature store: on by default, recorded in meta, the fingerprint of an untrimmed
store unchanged, ``slukd features --no-trim-silence``, and a run refusing train/valid stores that differ."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from pipeline.cli import main as cli
from pipeline.data.audio import SAMPLE_RATE
from pipeline.data.batching import DataError
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Utterance, write_manifest
from pipeline.frontends.feature_store import (
    ExtractionOptions,
    FeatureStore,
    compute_feature_store,
    store_fingerprint,
)
from tests.openset_fixtures import at_level, espeak_speech, noise

OPTIONS = ExtractionOptions(device="cpu", num_workers=0)
LEAD, TAIL = 1.0, 0.8  # seconds of quiet noise floor around each command


@pytest.fixture(scope="module")
def padded_corpus(tmp_path_factory):
    """Three espeak commands with a second of noise floor before and most of one after."""
    folder = tmp_path_factory.mktemp("padded")
    rng = np.random.default_rng(0)
    utterances = []
    for number, text in enumerate(["turn on the lights", "stop", "bring me my shoes"]):
        speech = at_level(espeak_speech(text), -25)
        signal = np.concatenate(
            [np.zeros(int(LEAD * SAMPLE_RATE)), speech, np.zeros(int(TAIL * SAMPLE_RATE))]
        )
        signal = (signal + at_level(noise(len(signal), "pink", rng), -60)).astype(np.float32)
        soundfile.write(str(folder / f"u{number}.wav"), signal, SAMPLE_RATE)
        utterances.append(Utterance(f"u{number}", f"u{number}.wav", len(signal) / SAMPLE_RATE, SAMPLE_RATE, text,
                                    f"intent{number}", speaker="espeak"))  # fmt: skip
    LabelSet([u.intent for u in utterances]).save(folder / "labels.json")
    return write_manifest(folder / "train.jsonl", utterances)


def test_trimmed_by_default_and_recorded(padded_corpus, tmp_path):
    trimmed = compute_feature_store(padded_corpus, tmp_path / "trimmed", options=OPTIONS)
    kept = compute_feature_store(padded_corpus, tmp_path / "kept", options=OPTIONS, trim_silence=False)
    assert trimmed.trim_silence and not kept.trim_silence
    assert "trim_silence" not in kept.meta  # a store built before trimming existed looks the same
    assert store_fingerprint(kept.frontend, padded_corpus) == {
        key: kept.meta[key] for key in ("version", "feature_config", "audio_sha256")
    }
    for utterance_id in kept.ids:
        cut = kept.frame_count(utterance_id) - trimmed.frame_count(utterance_id)
        # the quiet second before and 0.8 s after go, but for the 0.1 s margins (10 ms frames)
        assert abs(cut - (LEAD + TAIL - 0.2) * 100) <= 12, (utterance_id, cut)


def test_cli_option_and_mismatched_stores(padded_corpus, tmp_path):
    out = tmp_path / "kept"
    assert cli.main(["features", "--manifest", str(padded_corpus), "--out", str(out), "--device", "cpu",
                     "--num-workers", "0", "--no-trim-silence"]) == 0  # fmt: skip
    assert not FeatureStore(out).trim_silence
    from pipeline.training.train import TrainInputs, load_experiment_config, train_student

    trimmed = compute_feature_store(padded_corpus, tmp_path / "trimmed", options=OPTIONS)
    inputs = TrainInputs(padded_corpus, padded_corpus, trimmed.folder, out)
    config = load_experiment_config(None, ["train.epochs=1", "train.device=cpu", "student.d_model=16",
                                           "student.num_layers=1", "student.num_heads=2", "student.feedforward=16", "student.num_intents=3"])  # fmt: skip
    with pytest.raises(DataError, match="trim_silence False differs from the train store's"):
        train_student(inputs, tmp_path / "run", config)
