"""Outlier exposure end to end on tiny models: the tiny espeak corpus mixed with the tiny
out-of-domain corpus, a student and a teacher trained with the ``unknown`` intent, ``slukd
evaluate`` on the held-out out-of-domain split, and the report's open-set section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from inference_fixtures import TINY_MODEL
from train_fixtures import save_tiny_bert

from data_prep.ood.generate import OodConfig, prepare_ood
from data_prep.ood.mix import mix_open_set
from data_prep.synthetic.engines import EngineUnavailable, EspeakEngine
from data_prep.synthetic.generate import SyntheticConfig, prepare_synthetic
from pipeline.cli.main import main
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest
from pipeline.data.open_set import UNKNOWN_INTENT
from pipeline.data.text import normalize_transcript
from pipeline.evaluation.open_set import OpenSetError, evaluate_open_set
from pipeline.evaluation.report import write_report
from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store
from pipeline.scoring.open_set import auroc
from pipeline.teacher.train import TeacherConfig, train_teacher
from pipeline.training.train import TrainInputs, load_experiment_config, train_student

STUDENT = [s for s in TINY_MODEL if not s.startswith(("distill.ctc", "train.epochs"))] + [
    "train.epochs=30",
    "student.num_intents=0",
]


@pytest.fixture(scope="module")
def open_set(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("home_assistant_intents")
    try:
        EspeakEngine.check()
    except EngineUnavailable as error:
        pytest.skip(str(error))
    root = tmp_path_factory.mktemp("open_set")
    corpus = root / "tiny"
    prepare_synthetic(corpus, SyntheticConfig(size="tiny", seed=0, engines=["espeak"]))
    ood_config = OodConfig(size="tiny", engines=["espeak"], held_out_engine="none", num_workers=1,
                           in_domain=[str(corpus / "manifests/train.jsonl")])  # fmt: skip
    prepare_ood(root / "ood", ood_config)
    mixed = root / "mixed"
    mix_open_set(corpus, root / "ood", mixed)
    options = ExtractionOptions(device="cpu", num_workers=0)
    for split in ("train", "valid"):
        compute_feature_store(mixed / f"manifests/{split}.jsonl", mixed / "fbank" / split, options=options)
    inputs = TrainInputs(mixed / "manifests/train.jsonl", mixed / "manifests/valid.jsonl",
                         mixed / "fbank/train", mixed / "fbank/valid")  # fmt: skip
    experiment = root / "exp"
    train_student(inputs, experiment / "student_oe", load_experiment_config(None, STUDENT))
    manifests = {split: mixed / f"manifests/{split}.jsonl" for split in ("train", "valid")}
    words = {word for path in manifests.values() for u in read_manifest(path)
             for word in normalize_transcript(u.transcript).split()}  # fmt: skip
    teacher = TeacherConfig(model=str(save_tiny_bert(root / "bert", words)), epochs=4, learning_rate=1e-3,
                            freeze_embeddings=False, device="cpu")  # fmt: skip
    train_teacher(manifests, experiment / "teacher", teacher)
    return {"data": mixed, "experiment": experiment}


def score_of(row: dict, method: str) -> float:
    """A stored score; ``None`` (no speech: rejected before the model) is -inf."""
    return -np.inf if row[method] is None else row[method]


def test_the_student_learns_unknown_from_the_mixed_corpus(open_set, tmp_path):
    student = open_set["experiment"] / "student_oe"
    labels = LabelSet.load(student / "labels.json") if (student / "labels.json").is_file() else None
    config = json.loads((student / "config.json").read_text())
    intents = labels.intents if labels else config["labels"]["intents"]
    assert intents[-1] == UNKNOWN_INTENT and len(intents) == 32
    train = read_manifest(open_set["data"] / "manifests/train.jsonl")
    assert {u.extra.get("ood_kind") for u in train if u.intent == UNKNOWN_INTENT} == {
        "other_domain", "generic", "near_miss", "non_speech"
    }  # fmt: skip
    # the tiny model (62 commands, 31 intents) learns its training data, not much beyond: on it,
    # 1 - p(unknown) ranks the commands above what it was taught to reject (well above chance; its
    # checkpoint is chosen on valid's command acceptance, and valid holds held-out phrasings)
    result = evaluate_open_set(student, open_set["data"], "ood_train", in_domain_splits=("train",),
                               device="cpu", out_dir=tmp_path)  # fmt: skip
    assert result["metrics"]["unknown"]["auroc"] >= 0.7
    # a row the speech check stopped before the model (as predict does) has no score: -inf
    inside = [row["unknown"] for row in result["scores"] if row["kind"] == "in_domain"]
    silent = [row["unknown"] for row in result["scores"] if row["kind"] == "non_speech"]
    assert None not in inside and None in silent
    assert np.mean(inside) > np.mean([score_of({"unknown": score}, "unknown") for score in silent])


def test_slukd_evaluate_on_an_ood_split_writes_scores(open_set):
    student = open_set["experiment"] / "student_oe"
    args = ["evaluate", "--model", str(student), "--data", str(open_set["data"]), "--split", "ood_test"]
    assert main([*args, "--device", "cpu"]) == 0
    result = json.loads((student / "eval/ood_test.json").read_text())
    assert result["format"] == "slukd-open-set" and result["method"] == "energy"  # the measured default
    ood_test = read_manifest(open_set["data"] / "manifests/ood_test.jsonl")
    test = read_manifest(open_set["data"] / "manifests/test.jsonl")
    assert len(result["scores"]) == len(ood_test) + len(test)
    # the corpus has slots, so the student has slot heads: the whole command's confidence is a score too
    assert set(result["metrics"]) == {"max_softmax", "energy", "unknown", "command"}
    for method, metrics in result["metrics"].items():
        inside = [score_of(row, method) for row in result["scores"] if row["kind"] == "in_domain"]
        outside = [score_of(row, method) for row in result["scores"] if row["kind"] != "in_domain"]
        assert metrics["auroc"] == pytest.approx(auroc(inside, outside), abs=1e-5)
        assert set(metrics["rejected_by_kind"]) == {"other_domain", "generic", "near_miss", "non_speech"}
        assert result["threshold"][method]["from"] == "valid at 98% acceptance"
    with pytest.raises(OpenSetError, match="not an out-of-domain split"):
        evaluate_open_set(student, open_set["data"], "test", device="cpu")


def test_the_teacher_on_text_and_the_report_section(open_set):
    teacher = open_set["experiment"] / "teacher"
    result = evaluate_open_set(teacher, open_set["data"], "ood_test", device="cpu")
    assert result["model"]["kind"] == "teacher" and result["model"]["has_unknown"]
    assert 0.0 <= result["metrics"]["unknown"]["auroc"] <= 1.0
    student = open_set["experiment"] / "student_oe"
    for model in (student, teacher):  # the report lists the models evaluated on an in-domain split
        assert main(["evaluate", "--model", str(model), "--data", str(open_set["data"]), "--split", "test",
                     "--no-noise", "--no-speed", "--device", "cpu"]) == 0  # fmt: skip
    assert main(["evaluate", "--model", str(student), "--data", str(open_set["data"]), "--split", "ood_test",
                 "--device", "cpu"]) == 0  # fmt: skip
    report = write_report(open_set["experiment"])
    markdown = (report / "report.md").read_text()
    assert "## Open set: rejecting what is not a command" in markdown
    saved = json.loads((student / "eval/ood_test.json").read_text())
    auroc_text = f"{saved['metrics']['energy']['auroc']:.4f}"
    row = next(
        line
        for line in markdown.splitlines()
        if line.startswith("| student_oe") and "energy (model's)" in line
    )
    assert auroc_text in row and "ood_test" in row
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["open_set"]["student_oe/ood_test"]["method"] == "energy"  # the measured default
    assert "teacher/ood_test" in metrics["open_set"]


def test_subset_and_out_of_domain_detection(tmp_path):
    from pipeline.data.manifest import Manifest, Utterance
    from pipeline.evaluation.open_set import in_domain_rows, is_out_of_domain, subset

    rows = [
        Utterance(f"u{i}", f"u{i}.wav", 1.0, 16000, "hi", UNKNOWN_INTENT if i % 2 else "on")
        for i in range(10)
    ]
    manifest = Manifest(rows, tmp_path / "m.jsonl")
    assert not is_out_of_domain(manifest) and not is_out_of_domain(Manifest([], tmp_path / "e.jsonl"))
    assert is_out_of_domain(Manifest(rows[1::2], tmp_path / "o.jsonl"))
    assert [u.id for u in in_domain_rows(manifest)] == ["u0", "u2", "u4", "u6", "u8"]
    picked = subset(manifest, 4)
    assert len(picked) == 4 and [u.id for u in picked] == sorted(
        (u.id for u in picked), key=lambda i: int(i[1:])
    )
    assert [u.id for u in subset(manifest, 4)] == [u.id for u in picked]  # seeded
    assert subset(manifest, 0) is manifest and subset(manifest, 50) is manifest
