"""benchmarks/student_scoring.py gives the numbers ``slukd evaluate`` gives, on the same
utterances and conditions, while running a shared frozen encoder once for several students."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import inputs_for, make_corpus, save_tiny_whisper

from pipeline.augment.conditions import NoiseCondition
from pipeline.data.labels import LabelSet
from pipeline.evaluation.evaluate import EvaluateConfig, evaluate
from pipeline.training.train import load_experiment_config, train_student

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.student_scoring import StudentScorer, evaluation_sets  # noqa: E402

pytest.importorskip("transformers")

COMMON = ["train.epochs=1", "train.patience=0", "train.device=cpu", "train.max_frames=4000",
          "train.warmup_steps=2", "train.learning_rate=0.003"]  # fmt: skip
CONDITIONS = [
    NoiseCondition("white", 10.0),
    NoiseCondition("reverb", rt60_s=(0.3, 0.6)),
    NoiseCondition("telephone"),
]
NOISY = 8


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The tiny corpus, two whisper students on one frozen tiny encoder (seeds 0 and 1) and a
    transformer student, one epoch each."""
    root = tmp_path_factory.mktemp("scoring")
    corpus = make_corpus(root)
    encoder = save_tiny_whisper(root / "whisper", positions=1500)
    whisper = ["student.family=whisper", f"student.pretrained={encoder}", "student.freeze=encoder",
               "student.extra_layers=1"]  # fmt: skip
    transformer = ["student.d_model=32", "student.num_layers=2", "student.num_heads=2", "student.feedforward=64",
                   "student.conv_channels=8"]  # fmt: skip
    runs = {"whisper0": [*whisper, "train.seed=0"], "whisper1": [*whisper, "train.seed=1"],
            "transformer": transformer}  # fmt: skip
    for name, settings in runs.items():
        train_student(inputs_for(corpus), root / name, load_experiment_config(None, COMMON + settings))
    return corpus, {name: root / name for name in runs}


def test_scores_match_slukd_evaluate(students, tmp_path):
    corpus, runs = students
    labels = LabelSet.load(corpus / "manifests/labels.json")
    manifests = {split: corpus / f"manifests/{split}.jsonl" for split in ("valid", "test")}
    sets = evaluation_sets(manifests, labels, CONDITIONS, "test", NOISY, seed=0)
    assert [s.name for s in sets] == ["valid", "test", "test subset clean", "test white_10dB",
                                      "test reverb_rt60_0.3-0.6", "test telephone"]  # fmt: skip
    assert len(sets[2].manifest) == NOISY
    scorer = StudentScorer(sets, "cpu", seed=0, batch_seconds=20.0)
    config = EvaluateConfig(snrs=(10.0,), noise_types=("white",), speed=False, device="cpu", seed=0,
                            noisy_utterances=NOISY)  # fmt: skip
    frozen_seconds = []
    for name, run in runs.items():
        scores = scorer.score(run)
        frozen_seconds.append(scorer.frozen_seconds)
        reference = evaluate(run, corpus, "test", config, out_dir=tmp_path / name)
        ids = reference["predictions"]["ids"]
        conditions = reference["predictions"]["conditions"]
        assert list(scores["test"].predicted) == conditions["clean"]
        assert scores["test"].accuracy == pytest.approx(reference["metrics"]["accuracy"])
        position = {utterance_id: row for row, utterance_id in enumerate(ids)}
        subset = [position[u.id] for u in sets[2].manifest]
        for eval_set in sets[3:]:
            expected = [conditions[eval_set.condition.name][row] for row in subset]
            assert None not in expected
            agree = np.mean(np.array(scores[eval_set.name].predicted) == np.array(expected))
            assert agree == 1.0, (name, eval_set.name, agree)
        sweep = {row["condition"]: row["accuracy"] for row in reference["noise_sweep"]}
        for eval_set in sets[3:]:
            assert scores[eval_set.name].accuracy == pytest.approx(sweep[eval_set.condition.name])
    # the second whisper student reused the first one's frozen states; the transformer has none
    assert frozen_seconds[0] > 0 and frozen_seconds[1] == frozen_seconds[0] == frozen_seconds[2]


def test_cached_scores_are_reused_for_the_same_weights(students, tmp_path):
    corpus, runs = students
    labels = LabelSet.load(corpus / "manifests/labels.json")
    sets = evaluation_sets({"valid": corpus / "manifests/valid.jsonl"}, labels, [], seed=0)
    scorer = StudentScorer(sets, "cpu")
    first = scorer.cached_score(runs["transformer"], tmp_path / "scores.json")
    stored = (tmp_path / "scores.json").read_text()
    assert scorer.cached_score(runs["transformer"], tmp_path / "scores.json") == first
    other = scorer.cached_score(runs["whisper0"], tmp_path / "scores.json")  # other weights: rescored
    assert (tmp_path / "scores.json").read_text() != stored and set(other) == {"valid"}
