"""The default recipe at size tiny, end to end, as the README's main command runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic" / "run.sh"
SPLITS = ("train", "valid", "test", "test_unseen_phrasing")


def run_recipe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = ["bash", str(RECIPE), "--size", "tiny", "--data-root", str(tmp_path / "data"),
               "--exp-root", str(tmp_path / "exp"), "--python", sys.executable, "--device", "cpu", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    result = run_recipe(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_every_stage_writes_its_files(finished):
    root, result = finished
    data, exp = root / "data" / "synthetic_tiny", root / "exp" / "synthetic_tiny"
    for split in SPLITS:
        assert (data / "manifests" / f"{split}.jsonl").is_file()
        for name in (".done", "meta.json", "index.json", "frames.f16"):
            assert (data / "fbank" / split / name).is_file()
    for name in ("labels.json", "stats.json"):
        assert (data / "manifests" / name).is_file()
    for name in (".done", "model.safetensors", "config.json", "metrics.json", "labels.json", "train_log.csv"):
        assert (exp / "teacher" / name).is_file(), name
    assert (exp / "teacher" / "targets" / ".done").is_file()
    metrics = json.loads((exp / "teacher" / "metrics.json").read_text())
    assert metrics["splits"]["valid"]["accuracy"] >= 0.9
    for stage in range(4):
        assert f"Stage {stage}:" in result.stderr
    assert "done in" in result.stderr


def test_second_run_skips_every_stage(finished):
    root, _ = finished
    result = run_recipe(root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already generated" in result.stderr
    assert result.stderr.count("feature store is up to date, skipping") == len(SPLITS)
    assert "teacher is up to date, skipping" in result.stderr
    assert "teacher targets are up to date, skipping" in result.stderr
    assert "synthesising" not in result.stderr and "fbank (audio seconds)" not in result.stderr


def test_help_and_unknown_options():
    result = subprocess.run(["bash", str(RECIPE), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--stop-stage" in result.stdout and "[tiny" not in result.stdout
    result = subprocess.run(["bash", str(RECIPE), "--no-such-option", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --no-such-option" in result.stderr
    result = subprocess.run(["bash", str(RECIPE), "--size", "huge"], capture_output=True, text=True)
    assert result.returncode == 1 and "--size must be tiny, small or full" in result.stderr
