"""The default recipe at size tiny, end to end (stages 0-7), as the README's main command runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / "run.sh"
SPLITS = ("train", "valid", "test", "test_unseen_phrasing")
# Two epochs per student keep the test in minutes; everything else is the default recipe. The
# override names the students' folders (student_ce_train.epochs2), so runs never collide.
QUICK = ("--student-set", "train.epochs=2", "--engines", "espeak")
STUDENTS = ("student_ce_train.epochs2", "student_kd_train.epochs2")


def run_recipe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = ["bash", str(RECIPE), "--size", "tiny", "--data-root", str(tmp_path / "data"),
               "--exp-dir", str(tmp_path / "exp"), "--python", sys.executable, "--device", "cpu",
               *QUICK, *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=1200, env=environment)


def stages_run(stderr: str) -> list[int]:
    return [stage for stage in range(8) if f"Stage {stage}:" in stderr]


def eval_files(exp: Path) -> list[Path]:
    return [exp / model / "eval" / f"{split}.json" for model in ("teacher", *STUDENTS)
            for split in ("test", "test_unseen_phrasing")]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    result = run_recipe(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_every_stage_writes_its_files(finished):
    root, result = finished
    data, exp = root / "data" / "synthetic_tiny", root / "exp"
    for split in SPLITS:
        assert (data / "manifests" / f"{split}.jsonl").is_file()
        for name in (".done", "meta.json", "index.json", "frames.f16"):
            assert (data / "fbank" / split / name).is_file()
    for name in ("labels.json", "stats.json"):
        assert (data / "manifests" / name).is_file()
    for name in (".done", "model.safetensors", "config.json", "metrics.json", "labels.json", "train_log.csv"):
        assert (exp / "teacher" / name).is_file(), name
    assert (exp / "teacher" / "targets" / ".done").is_file()
    assert json.loads((exp / "teacher" / "metrics.json").read_text())["splits"]["valid"]["accuracy"] >= 0.9
    for student in STUDENTS:
        for name in (
            ".done",
            "model.safetensors",
            "config.json",
            "metrics.json",
            "labels.json",
            "train_log.csv",
        ):
            assert (exp / student / name).is_file(), f"{student}/{name}"
    losses = json.loads((exp / STUDENTS[1] / "metrics.json").read_text())["losses"]
    assert losses == ["ce", "hidden", "attention"]
    assert json.loads((exp / STUDENTS[0] / "metrics.json").read_text())["losses"] == ["ce"]
    for path in eval_files(exp):
        evaluation = json.loads(path.read_text())
        assert 0 <= evaluation["metrics"]["accuracy"] <= 1, path
    student_eval = json.loads((exp / STUDENTS[1] / "eval" / "test.json").read_text())
    conditions = {(row["noise"], row["snr_db"]) for row in student_eval["noise_sweep"]}
    assert len(conditions) == 11  # clean + 5 SNRs x white and babble
    assert json.loads((exp / "teacher" / "eval" / "test.json").read_text())["noise_sweep"] is None
    report = exp / "report"
    for name in ("report.md", "report.html", "metrics.json"):
        assert (report / name).is_file(), name
    assert list(report.glob("*.png"))
    markdown = (report / "report.md").read_text()
    for model in ("teacher", *STUDENTS):
        assert model in markdown
    assert stages_run(result.stderr) == list(range(8))
    assert f"report: {exp}/report/report.md" in result.stderr
    assert "done in" in result.stderr


def test_second_run_skips_every_stage(finished):
    root, _ = finished
    exp = root / "exp"
    stamps = {path: path.stat().st_mtime_ns for path in eval_files(exp)}
    result = run_recipe(root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already generated" in result.stderr
    assert result.stderr.count("feature store is up to date, skipping") == len(SPLITS)
    assert "teacher is up to date, skipping" in result.stderr
    assert "teacher targets are up to date, skipping" in result.stderr
    assert result.stderr.count("student already trained with this config, skipping") == 2
    assert "synthesising" not in result.stderr and "fbank (audio seconds)" not in result.stderr
    assert result.stderr.count("already evaluated with these settings, skipping") == len(eval_files(exp))
    assert {path: path.stat().st_mtime_ns for path in eval_files(exp)} == stamps


def test_stages_4_to_5_rerun_only_those(finished):
    root, _ = finished
    result = run_recipe(root, "--stage", "4", "--stop-stage", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert stages_run(result.stderr) == [4, 5]
    assert result.stderr.count("running: ") == 2
    assert "report:" not in result.stderr


def test_other_settings_train_into_their_own_folders(finished):
    root, _ = finished
    result = run_recipe(root, "--stage", "5", "--stop-stage", "5", "--distill", "logits=1.0")
    assert result.returncode == 0, result.stderr[-3000:]
    kd = root / "exp" / "student_kd_train.epochs2_logits1.0"
    assert json.loads((kd / "metrics.json").read_text())["losses"] == ["ce", "logits"]
    assert (root / "exp" / STUDENTS[1] / ".done").is_file()  # the earlier run is untouched


def test_size_must_be_known():
    result = subprocess.run(["bash", str(RECIPE), "--size", "huge"], capture_output=True, text=True)
    assert result.returncode == 1 and "--size must be tiny, small or full" in result.stderr
