"""The `slukd` console command: help, version, validate, prepare dispatch, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile

from pipeline.cli import main
from pipeline.labels import LabelSet
from pipeline.manifest import Utterance, write_manifest


def run_slukd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120
    )


def make_split(tmp_path, duration=0.5):
    soundfile.write(str(tmp_path / "a.wav"), np.zeros(int(16000 * duration), np.float32) + 0.1, 16000)
    LabelSet(["on", "off"]).save(tmp_path)
    return write_manifest(
        tmp_path / "train.jsonl", [Utterance("u1", "a.wav", duration, 16000, "lights on", "on")]
    )


def test_help_and_version():
    result = run_slukd("--help")
    assert result.returncode == 0 and "prepare" in result.stdout and "validate" in result.stdout
    assert run_slukd("--version").stdout.strip().startswith("slukd ")
    assert run_slukd("validate", "--help").returncode == 0


def test_validate_good_manifest_with_audio(tmp_path):
    path = make_split(tmp_path)
    assert main(["validate", str(path), "--check-audio"]) == 0


def test_validate_reports_unknown_intent_and_bad_audio(tmp_path, caplog):
    path = make_split(tmp_path)
    LabelSet(["off"]).save(tmp_path)
    assert main(["validate", str(path)]) == 1
    assert "line 1: unknown intent 'on'" in caplog.text
    LabelSet(["on"]).save(tmp_path)
    line = json.loads(path.read_text())
    line["duration"] = 3.0
    path.write_text(json.dumps(line) + "\n")
    assert main(["validate", str(path), "--check-audio"]) == 1
    assert "duration 3.000 s in the manifest, 0.500 s in the file" in caplog.text
    (tmp_path / "a.wav").unlink()
    assert main(["validate", str(path), "--check-audio"]) == 1
    assert "a.wav: audio file not found" in caplog.text


def test_prepare_dispatches_and_rejects_unknown_corpora():
    result = run_slukd("prepare", "synthetic", "--help")
    assert result.returncode == 0 and "--size" in result.stdout
    result = run_slukd("prepare", "timit")
    assert result.returncode != 0 and "invalid choice" in result.stderr
