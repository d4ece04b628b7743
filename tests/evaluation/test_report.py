"""pipeline.evaluation.report: a report from fixture eval files (teacher + two students), every figure and table
in report.md and the self-contained report.html, numbers taken from the eval files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.cli.main import main
from pipeline.data.labels import LabelSet
from pipeline.evaluation.evaluate import EVAL_FORMAT, EVAL_VERSION
from pipeline.evaluation.report import ReportError, find_models, write_report
from pipeline.scoring.metrics import classification_report

LABELS = LabelSet(
    intents=["activate_lights_kitchen", "activate_lights_none", "deactivate_music_none", "change language_none_none"],
    slots={"action": ["activate", "deactivate", "change language"], "object": ["lights", "music", "none"],
           "location": ["kitchen", "none"]},
)  # fmt: skip


def write_eval(model_dir: Path, kind: str, accuracy_target: float, seed: int, ctc: bool = False,
               valid: float | None = None) -> dict:  # fmt: skip
    """A model dir (config.json, train_log.csv) with an ``eval/test.json`` built by the metric code;
    with ``valid``, a training ``metrics.json`` with that valid accuracy."""
    rng = np.random.default_rng(seed)
    gold = np.arange(40) % len(LABELS)
    logits = rng.normal(size=(40, len(LABELS)))
    correct = rng.random(40) < accuracy_target
    logits[np.arange(40), gold] += np.where(correct, 5.0, -5.0)
    metrics = classification_report(gold, logits, LABELS)
    metrics.update(teacher=None, teacher_agreement=None if kind == "teacher" else 0.5 + seed / 100,
                   teacher_accuracy=None)  # fmt: skip
    sweep = None
    if kind == "student":
        sweep = [{"condition": "clean", "noise": "clean", "snr_db": None, "accuracy": metrics["accuracy"],
                  "macro_f1": metrics["macro_f1"]}]  # fmt: skip
        for noise in ("white", "babble"):
            for snr in (20.0, 10.0, 0.0):
                value = metrics["accuracy"] * (snr + 5) / 30
                sweep.append({"condition": f"{noise}_{snr:g}dB", "noise": noise, "snr_db": snr,
                              "accuracy": value, "macro_f1": value})  # fmt: skip
    result = {
        "format": EVAL_FORMAT, "version": EVAL_VERSION,
        "model": {"dir": str(model_dir), "kind": kind, "losses": None, "ctc_head": ctc},
        "split": "test", "data": {"manifest": "x", "manifest_sha256": "0" * 64, "utterances": 40},
        "settings": {}, "fingerprint": {}, "metrics": metrics, "noise_sweep": sweep,
        "ctc": {"wer": 0.375 + seed / 1000, "cer": 0.1, "decoder": "greedy", "examples": []} if ctc else None,
        "speed": {"parameters": 800_000 + seed, "weights_bytes": 3_200_000, "input": "waveform",
                  "cpu": {"latency_ms": 7.25 + seed, "latency_utterances": 30, "real_time_factor": 0.0031,
                          "throughput_batch": 64, "throughput_utterances_per_second": 250.0,
                          "latency_threads": 1, "throughput_threads": 1}},
        "environment": {"date": "2025-01-01T00:00:00+00:00", "hardware": {"cpu": "test", "gpu": None}},
    }  # fmt: skip
    (model_dir / "eval").mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "eval" / "test.json").write_text(json.dumps(result))
    rows = ["epoch,step,lr,train_loss,train_ce,valid_accuracy,valid_loss,seconds"]
    rows += [f"{e},{10 * e},0.001,{3 / e:.4f},{3 / e:.4f},{min(1, 0.2 * e):.3f},1.0,2.0" for e in range(1, 6)]
    (model_dir / "train_log.csv").write_text("\n".join(rows) + "\n")
    if valid is not None:
        (model_dir / "metrics.json").write_text(
            json.dumps({"valid_accuracy": valid, "valid_loss": 0.1 + seed / 100})
        )
    return result


@pytest.fixture
def experiment(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "exp"
    evals = {
        "teacher": write_eval(root / "teacher", "teacher", 1.0, 0),
        # student_kd is best on test, student_ce on valid: the report chooses on valid
        "student_ce": write_eval(root / "student_ce", "student", 0.6, 1, valid=0.99),
        "student_kd": write_eval(root / "student_kd", "student", 0.8, 2, ctc=True, valid=0.99),
        "ablation/row3": write_eval(root / "ablation" / "row3", "student", 0.5, 3, valid=0.9),
    }
    (root / "notes").mkdir()  # a folder without evals is not a model
    return root, evals


def test_report_has_every_figure_and_table(experiment):
    root, evals = experiment
    assert main(["report", str(root)]) == 0
    out = root / "report"
    figures = ["accuracy_vs_snr.png", "per_intent_f1.png", "training_curves.png", "confusion_student_ce.png",
               "confusion_student_kd.png", "confusion_ablation_row3.png"]  # fmt: skip
    for name in figures + ["report.md", "report.html", "metrics.json"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in figures:
        assert f"]({name})" in markdown
    for heading in (
        "Main table",
        "Accuracy under noise",
        "Per-slot accuracy",
        "Per-intent F1",
        "Confusion",
        "Training curves",
    ):
        assert f"## {heading}" in markdown and f"<h2>{heading}" in page

    # numbers come from the eval files
    kd = evals["student_kd"]
    kd_row = next(line for line in markdown.splitlines() if line.startswith("| student_kd |"))
    assert (
        f"{100 * kd['metrics']['accuracy']:.1f}%" in kd_row and f"{kd['metrics']['macro_f1']:.3f}" in kd_row
    )
    assert "37.7%" in kd_row and "9.2" in kd_row and "52.0%" in kd_row  # WER, latency, agreement
    assert len([line for line in markdown.splitlines() if line.startswith("| ")]) >= 4 + 1 + 3 + 4
    white_0 = kd["noise_sweep"][3]
    assert white_0["condition"] == "white_0dB" and f"{100 * white_0['accuracy']:.1f}%" in markdown

    # self-contained html: every figure inline, nothing fetched from elsewhere
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == len(figures) and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r"https?://|<link|<script|url\(|@import", page)

    gathered = json.loads((out / "metrics.json").read_text())
    assert set(gathered["models"]) == {"teacher", "student_ce", "student_kd", "ablation/row3"}
    # chosen on valid (a tie at 99%, broken by the lower valid loss), never on test
    assert gathered["best_student"] == "student_ce" and gathered["main_split"] == "test"
    assert gathered["best_student_valid"]["source"] == "metrics.json"
    ce = evals["student_ce"]["metrics"]["accuracy"]
    assert (
        f"Best student, chosen on valid: student_ce (valid 99.0% (metrics.json); test, reported only: {100 * ce:.1f}%"
        in markdown
    )
    # every accuracy with its 95% Wilson interval: kd's test accuracy over its 40 utterances
    low, high = binomtest(round(40 * kd["metrics"]["accuracy"]), 40).proportion_ci(method="wilson")
    assert f"{100 * kd['metrics']['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in kd_row
    assert gathered["models"]["student_kd"]["splits"]["test"]["accuracy_interval"] == pytest.approx(
        [low, high]
    )
    assert gathered["models"]["student_kd"]["splits"]["test"]["accuracy"] == kd["metrics"]["accuracy"]
    assert gathered["models"]["teacher"]["train_log"]["epoch"] == [1, 2, 3, 4, 5]

    # a rerun replaces the folder; the report folder is never mistaken for a model
    assert main(["report", str(root), "--out", str(root / "report")]) == 0
    assert [m.name for m in find_models(root)] == ["teacher", "ablation/row3", "student_ce", "student_kd"]


def test_report_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no model dir with eval"):
        write_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "missing")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "experiment folder not found" in errors[0]
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("mine")
    write_eval(tmp_path / "exp" / "student_a", "student", 0.5, 1)
    with pytest.raises(ReportError, match="not a slukd report folder"):
        write_report(tmp_path / "exp", tmp_path / "precious")
    assert (tmp_path / "precious" / "keep.txt").read_text() == "mine"


def with_predictions(evaluation: dict, seed: int, keep: int = 40, noisy: int = 40) -> dict:
    """Per-utterance predictions on the first ``keep`` utterances (the first ``noisy`` under noise),
    right with the probability of the eval's own accuracy per condition; the sweep made to match."""
    rng = np.random.default_rng(seed)
    ids = [f"test-{i:03d}" for i in range(keep)]
    gold = [int(g) for g in np.arange(keep) % len(LABELS)]
    conditions, sweep = {}, []
    for row in evaluation["noise_sweep"]:
        count = keep if row["noise"] == "clean" else noisy
        right = rng.random(count) < row["accuracy"]
        conditions[row["condition"]] = [
            g if r else (g + 1) % len(LABELS) for g, r in zip(gold, right, strict=False)
        ]
        conditions[row["condition"]] += [None] * (keep - count)
        sweep.append({**row, "accuracy": float(right.mean()), "utterances": count})
    return {
        **evaluation,
        "noise_sweep": sweep,
        "predictions": {"ids": ids, "gold": gold, "conditions": conditions},
    }


def test_report_with_a_cascade_compares_on_the_same_utterances(tmp_path):
    root = tmp_path / "exp"
    write_eval(root / "teacher", "teacher", 1.0, 0)
    for name, target, seed in (("student_kd", 0.8, 2), ("cascade", 0.6, 5)):
        evaluation = write_eval(root / name, "student", target, seed, valid=0.95)
        evaluation = with_predictions(evaluation, seed, *((40, 40) if name == "student_kd" else (20, 8)))
        if name == "cascade":
            evaluation["model"].update(
                kind="cascade", asr="faster-whisper:packaged Whisper tiny.en (int8, beam 1)"
            )
            evaluation["data"].update(utterances=20, split_utterances=40,
                                      subset={"seed": 0, "split_utterances": 40, "utterances": 20, "noisy_utterances": 8})  # fmt: skip
            evaluation["asr"] = {
                "conditions": [{"condition": "clean", "utterances": 20, "wer": 0.296, "cer": 0.1}]
            }
            evaluation["ctc"], evaluation["metrics"]["utterances"] = None, 20
            evaluation["speed"].update(weights_bytes=166_400_000, sequential=True)
            evaluation["speed"]["cpu"].update(latency_ms=350.0, throughput_utterances_per_second=None)
        (root / name / "eval" / "test.json").write_text(json.dumps(evaluation))
    student = json.loads((root / "student_kd" / "eval" / "test.json").read_text())
    cascade = json.loads((root / "cascade" / "eval" / "test.json").read_text())

    out = write_report(root)
    markdown = (out / "report.md").read_text()
    assert [m.name for m in find_models(root)] == ["teacher", "student_kd", "cascade"]
    assert "## End-to-end vs cascade" in markdown and (out / "confusion_cascade.png").is_file()
    cascade_row = next(line for line in markdown.splitlines() if line.startswith("| cascade | cascade |"))
    assert "| 20 * |" in cascade_row and "29.6%" in cascade_row and "166.4" in cascade_row
    assert (
        "seeded subset (seed 0) of 20 of the 40 utterances, 8 of them under each noisy condition" in markdown
    )

    # the student scored on the cascade's utterances, condition by condition
    gathered = json.loads((out / "metrics.json").read_text())["end_to_end_vs_cascade"]
    rows = gathered["cascades"]["cascade"]["rows"]
    assert [row["condition"] for row in rows] == [row["condition"] for row in cascade["noise_sweep"]]
    for row in rows:
        keep = 20 if row["condition"] == "clean" else 8
        mine = student["predictions"]["conditions"][row["condition"]][:keep]
        gold = student["predictions"]["gold"][:keep]
        assert row["utterances"] == keep and row["same_utterances"]
        assert row["student"] == pytest.approx(np.mean(np.array(mine) == np.array(gold)))
        theirs = next(r for r in cascade["noise_sweep"] if r["condition"] == row["condition"])
        assert row["cascade"] == pytest.approx(theirs["accuracy"])
        # McNemar's exact test on the pairs, worked out here from the predictions
        mine_right = np.array(mine) == np.array(gold)
        theirs_right = np.array(cascade["predictions"]["conditions"][row["condition"]][:keep]) == np.array(
            gold
        )
        only_mine, only_theirs = (
            int((mine_right & ~theirs_right).sum()),
            int((~mine_right & theirs_right).sum()),
        )
        p_value = binomtest(only_mine, only_mine + only_theirs).pvalue if only_mine + only_theirs else 1.0
        assert row["p_value"] == pytest.approx(p_value)
        expected = "level" if p_value >= 0.05 else ("ahead" if only_mine > only_theirs else "behind")
        assert row["verdict"] == expected
        low, high = binomtest(int(mine_right.sum()), keep).proportion_ci(method="wilson")
        cell = (f"| {row['condition']} | {expected} {100 * (row['student'] - row['cascade']):+.1f}, p={p_value:.2g} "
                f"({100 * row['student']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] vs ")  # fmt: skip
        assert cell in markdown and "% vs " not in cell[-3:]
        assert f"{keep} utt.)" in markdown
    ratios = gathered["cascades"]["cascade"]["ratios"]
    assert ratios["latency"] == pytest.approx(350.0 / 9.25) and ratios["size"] == pytest.approx(52.0)
    assert "the student is 38x faster" in markdown and "52x smaller" in markdown
    ahead = sum(row["verdict"] == "ahead" for row in rows)
    behind = sum(row["verdict"] == "behind" for row in rows)
    assert (
        f"ahead on {ahead}, behind on {behind} and level on {len(rows) - ahead - behind} of {len(rows)}"
        in markdown
    )
    assert ahead < sum(row["student"] > row["cascade"] for row in rows)  # 8 noisy utterances decide nothing
    assert gathered["cascades"]["cascade"]["goal_met"] == (ahead == len(rows))


def test_command_acceptance_column_and_slot_scores_only_with_slots(experiment):
    root, evals = experiment
    markdown = lambda: (root / "report" / "report.md").read_text()  # noqa: E731
    assert main(["report", str(root)]) == 0
    assert "command acceptance" not in markdown()  # no eval file has slot scores
    for name, acceptance in (("student_kd", 0.675), ("student_ce", 0.4125)):
        path = root / name / "eval" / "test.json"
        result = json.loads(path.read_text())
        result["metrics"].update(command_acceptance=acceptance, slots={
            "action": {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.745},
            "micro": {"accuracy": 0.85, "precision": 0.8, "recall": 0.7, "f1": 0.6543},
        })  # fmt: skip
        path.write_text(json.dumps(result))
    assert main(["report", str(root)]) == 0
    lines = markdown().splitlines()
    header = next(line for line in lines if line.startswith("| model | kind |"))
    cells = [cell.strip() for cell in header.strip("|").split("|")]
    assert cells.index("command acceptance [95% CI]") == cells.index("accuracy [95% CI]") + 1
    kd_row = next(line for line in lines if line.startswith("| student_kd |"))
    assert "67.5%" in kd_row
    teacher_row = [
        c.strip() for c in next(line for line in lines if line.startswith("| teacher |")).split("|")
    ]
    assert teacher_row[cells.index("command acceptance [95% CI]") + 1] == "–"  # no slots scored
    slot_header = next(line for line in lines if "action accuracy" in line)
    assert "action F1" in slot_header and "micro F1" in slot_header
    assert "65.4%" in next(line for line in lines if line.startswith("| student_kd |") and "74.5%" in line)


def test_a_cascade_with_other_noise_is_no_pair(tmp_path):
    """The same utterance ids under another noise seed are other audio: only clean stays paired."""
    root = tmp_path / "exp"
    write_eval(root / "teacher", "teacher", 1.0, 0)
    for name, target, seed in (("student_kd", 0.8, 2), ("cascade", 0.6, 5)):
        evaluation = with_predictions(write_eval(root / name, "student", target, seed, valid=0.95), seed)
        if name == "cascade":
            evaluation["model"]["kind"] = "cascade"
            evaluation["settings"] = {"seed": 1}
        (root / name / "eval" / "test.json").write_text(json.dumps(evaluation))
    out = write_report(root)
    rows = json.loads((out / "metrics.json").read_text())["end_to_end_vs_cascade"]["cascades"]["cascade"][
        "rows"
    ]
    assert {row["condition"]: row["same_utterances"] for row in rows} == {
        row["condition"]: row["condition"] == "clean" for row in rows
    }
    assert all(
        row["p_value"] is None and row["verdict"] == "level" for row in rows if not row["same_utterances"]
    )
    assert "no pair:" in (out / "report.md").read_text()


def test_with_slots_the_pair_is_scored_on_whole_commands(tmp_path):
    # One intent (a coffee order): every intent is right, so only the commands tell the models apart
    from pipeline.evaluation.report_cascade import COMMANDS, compare
    from pipeline.evaluation.report_figures import ModelEvals

    ids = [f"u{i}" for i in range(30)]

    def evaluation(exact: list[int]) -> dict:
        return {"settings": {}, "noise_sweep": [],
                "predictions": {"ids": ids, "gold": [0] * 30, "conditions": {"clean": [0] * 30},
                                "commands": {"clean": exact}}}  # fmt: skip

    student = ModelEvals("student_kd", tmp_path, "student", {"test": evaluation([1] * 28 + [0] * 2)})
    cascade = ModelEvals("cascade", tmp_path, "cascade", {"test": evaluation([1] * 12 + [0] * 18)})
    (row,) = compare(student, cascade)
    assert row.measure == COMMANDS and row.utterances == 30
    assert (row.student, row.cascade) == (pytest.approx(28 / 30), pytest.approx(12 / 30))
    assert (row.student_only, row.cascade_only) == (16, 0) and row.verdict == "ahead"
    # without per-utterance commands in one of the files: the intents, level here
    del cascade.evals["test"]["predictions"]["commands"]
    (row,) = compare(student, cascade)
    assert row.measure == "accuracy" and row.student == row.cascade == 1.0 and row.verdict == "level"
