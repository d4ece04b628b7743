"""The `slukd` console command: help, version, validate, prepare dispatch, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile

from pipeline.cli.main import main
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Utterance, write_manifest


def run_slukd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args], capture_output=True, text=True, timeout=120
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


def test_one_error_handler_one_line_and_its_exit_status(tmp_path, caplog):
    """main alone turns errors into one line: 1 for a bad input, 2 for bad settings."""

    def last_error() -> str:
        message = [r for r in caplog.records if r.levelname == "ERROR"][-1].getMessage()
        assert "\n" not in message and "Traceback" not in caplog.text
        return message

    assert main(["teacher", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")]) == 1
    assert last_error() == f"{tmp_path / 'nowhere'}: data folder not found"
    make_split(tmp_path)
    assert (
        main(["teacher", "train", "--data", str(tmp_path), "--out", str(tmp_path / "t"), "--set", "epochs=0"])
        == 2
    )
    assert "epochs must be at least 1" in last_error()
    assert (
        main(["teacher", "export", "--data", str(tmp_path), "--out", str(tmp_path / "x"), "--layers", "2,x"])
        == 2
    )
    assert "--layers must be" in last_error()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--split", "train",
                 "--snrs", "10,loud"]) == 2  # fmt: skip
    assert "--snrs must be numbers" in last_error()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--split", "train"]) == 1
    assert last_error() == f"{tmp_path}: not a model dir (no config.json)"
    assert main(["report", str(tmp_path / "nowhere")]) == 1
