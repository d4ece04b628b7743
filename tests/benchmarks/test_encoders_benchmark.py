"""benchmarks/encoders.py end to end on the tiny corpus with two tiny random Whisper encoders
(one and two layers): it trains, scores, exports int8 ONNX, times it and writes its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import make_corpus, save_tiny_whisper

from pipeline.data.manifest import read_manifest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_encoders_table(tmp_path):
    corpus = make_corpus(tmp_path)
    small = save_tiny_whisper(tmp_path / "one_layer", positions=1500, encoder_layers=1)
    large = save_tiny_whisper(tmp_path / "two_layers", positions=1500, encoder_layers=2)
    out = tmp_path / "encoders.md"
    command = [
        sys.executable, str(ROOT / "benchmarks/encoders.py"), "--data", str(corpus), "--work", str(tmp_path / "work"),
        "--encoders", f"{small},{large}", "--set", "train.epochs=1", "--set", "train.max_frames=4000",
        "--runs", "3", "--out", str(out),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    text = out.read_text()
    assert text in finished.stdout and "encoders.py --data" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == [f"`{small}`", f"`{large}`"]
    splits = [
        s for s in ("valid", "test", "test_unseen_engine") if (corpus / f"manifests/{s}.jsonl").is_file()
    ]
    parameters = []
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        parameters.append(float(cells[1].split()[0]))
        for split, cell in zip(splits, cells[2 : 2 + len(splits)], strict=True):
            accuracy, correct, n = re.fullmatch(r"([\d.]+) \((\d+)/(\d+)\)", cell).groups()
            assert int(n) == len(read_manifest(corpus / f"manifests/{split}.jsonl"))
            assert float(accuracy) == pytest.approx(100 * int(correct) / int(n), abs=0.05)
        cache, train = float(cells[2 + len(splits)]), float(cells[3 + len(splits)])
        assert cache > 0 and train > 0
        assert float(cells[4 + len(splits)].split()[0]) > 0  # int8 latency, ms
    assert parameters[1] >= parameters[0]
    assert len(list((tmp_path / "work/onnx").glob("*/*/model.int8.onnx"))) == 2  # one export per run
    timing = json.loads(
        next((tmp_path / "work/runs").glob("*two_layers_*/seed0/bench_timing.json")).read_text()
    )
    assert f"student.pretrained={large}" in timing["settings"]
