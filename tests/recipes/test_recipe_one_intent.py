"""The grammar recipe on a grammar of one intent, end to end at size tiny: every difference is in the
slots (a pizza order here; a coffee order is the same shape). Stage 4 used to refuse one intent, the
YAML loader turned the slot value "no" into "False", and the teacher and the cascade had no command
acceptance. Lean settings (espeak only, one student, no noise sweep) keep it to a few minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_recipe_grammar import snapshot

from pipeline.cli import main as cli

PIZZA = """\
context:
  expressions:
    orderPizza:
      - "(@want) (a) $size:size (pizza)"
      - "(@want) (a) $size:size $crust:crust (crust) (pizza)"
      - "(@want) $number:quantity $size:size pizzas"
      - "(@want) (a) $topping:topping pizza with $cheese:cheese cheese"
      - "(@want) (a) $size:size $topping:topping (pizza) (with $cheese:cheese cheese)"
  slots:
    size: [small, medium, large, extra large]
    crust: [thin, thick, stuffed]
    topping: [margherita, pepperoni, veggie, four cheese]
    number: [two, three]
    cheese: [extra, no, double]
  macros:
    want: [i want, i'd like, can i get]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_intent")
    checkout = snapshot(root)
    grammar = root / "pizza.yaml"
    grammar.write_text(PIZZA, encoding="utf-8")
    environment = {**os.environ, "CASCADE_UTTERANCES": "4", "CASCADE_NOISY_UTTERANCES": "0",
                   "ASR_TRAIN_UTTERANCES": "8", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(checkout)}  # fmt: skip
    command = ["bash", str(checkout / "recipes" / "grammar" / "run.sh"), "--grammar", str(grammar),
               "--size", "tiny", "--engines", "espeak", "--held-out-engine", "none", "--students", "kd",
               "--student-set", "train.epochs=2", "--noise", "false", "--export-utterances", "2",
               "--data-dir", str(root / "data"), "--exp-dir", str(root / "exp"),
               "--python", sys.executable, "--device", "cpu"]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1800, env=environment, cwd=checkout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_one_intent_and_its_slots(finished):
    labels = json.loads((finished / "data" / "openset" / "manifests" / "labels.json").read_text())
    assert labels["intents"] == ["orderPizza"]
    assert labels["slots"]["cheese"] == ["extra", "no", "double", "none"]  # "no" is a word, not False


def test_every_model_is_scored_on_commands(finished):
    exp = finished / "exp"
    student = next(exp.glob("student_kd_*"))
    for model in (exp / "teacher", student, exp / "cascade"):
        metrics = json.loads((model / "eval" / "test.json").read_text())["metrics"]
        # intent and every slot: the only measure that means anything with one intent
        assert metrics["command_acceptance"] is not None, model
        slots = json.loads((model / "labels.json").read_text())["slots"]
        assert set(metrics["slots"]) == {*slots, "micro"}, model
    assert (student / "eval" / "ood_test.json").is_file()
    report = (exp / "report" / "report.md").read_text()
    assert "command acceptance" in report


def test_one_intent_rejects_on_the_whole_command(finished, capsys):
    exp = finished / "exp"
    student = next(exp.glob("student_kd_*"))
    rejection = json.loads((student / "config.json").read_text())["rejection"]
    # its one intent's score is constant: the jointly decoded command's confidence is the score
    assert rejection["method"] == "command" and rejection["threshold"] is not None and rejection["vad"]
    assert rejection["calibration"]["acceptance"] >= 0.98
    assert (student / "model.int8.onnx").is_file()
    manifest = finished / "data" / "openset" / "manifests" / "test.jsonl"
    first = json.loads(manifest.read_text().splitlines()[0])
    audio = (manifest.parent / first["audio"]).resolve()
    onnx = str(student / "model.int8.onnx")
    assert cli.main(["predict", "--model", onnx, "--threshold", "none", str(audio)]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert answer["intent"] == "orderPizza" and answer.get("reason") is None
    assert "slots" in answer and "command_confidence" in answer
    assert (
        cli.main(["predict", "--model", onnx, str(audio)]) == 0
    )  # the stored threshold, from the ONNX metadata
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert answer["intent"] == "orderPizza" or answer["reason"] == "low confidence"
