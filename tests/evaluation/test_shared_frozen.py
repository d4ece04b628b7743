"""``slukd evaluate --model A,B``: two students on one frozen Whisper encoder run it once per batch,
and each eval file is the one it would be alone (pipeline.evaluation.shared_frozen)."""

from __future__ import annotations

import json

import pytest
from inference_fixtures import tiny_model
from train_fixtures import inputs_for, save_tiny_whisper

from pipeline.cli.main import main
from pipeline.evaluation.shared_frozen import SHARED_FROZEN
from pipeline.training.train import load_experiment_config, train_student

pytest.importorskip("transformers")

SETTINGS = ["train.epochs=1", "train.patience=0", "train.device=cpu", "train.max_frames=4000",
            "train.warmup_steps=2", "train.learning_rate=0.003", "student.family=whisper",
            "student.freeze=encoder", "student.extra_layers=1"]  # fmt: skip


def test_two_students_share_the_frozen_encoder_and_keep_their_numbers(
    tmp_path_factory, tmp_path, monkeypatch
):
    data = tiny_model(tmp_path_factory.getbasetemp() / "inference_model").data
    root = tmp_path_factory.mktemp("shared_frozen")
    encoder = save_tiny_whisper(root / "whisper", positions=1500)
    students = []
    for seed in (0, 1):  # the same frozen encoder, other tops
        config = load_experiment_config(
            None, [*SETTINGS, f"student.pretrained={encoder}", f"train.seed={seed}"]
        )
        train_student(inputs_for(data, frozen_cache=root / f"cache{seed}"), root / f"student{seed}", config)
        students.append(root / f"student{seed}")
    common = ["evaluate", "--data", str(data), "--split", "test,test_unseen_phrasing", "--device", "cpu",
              "--snrs", "10", "--noise-types", "white", "--no-speed"]  # fmt: skip
    hits = []
    original = SHARED_FROZEN.forward_for

    def counting(model):
        forward = original(model)
        hits.append(SHARED_FROZEN.hits)
        return forward

    monkeypatch.setattr(SHARED_FROZEN, "forward_for", counting)
    assert main([*common, "--model", ",".join(map(str, students))]) == 0
    assert hits[1] == 0 and hits[2] > hits[1] and not SHARED_FROZEN.states and not SHARED_FROZEN.enabled
    together = {(s, split): json.loads((s / "eval" / f"{split}.json").read_text())
                for s in students for split in ("test", "test_unseen_phrasing")}  # fmt: skip
    alone = tmp_path / "alone"
    for student in students:
        assert main([*common, "--model", str(student), "--out", str(alone / student.name), "--force"]) == 0
    for (student, split), shared in together.items():
        own = json.loads((alone / student.name / f"{split}.json").read_text())
        assert shared["predictions"] == own["predictions"], (student, split)
        assert shared["metrics"] == own["metrics"] and shared["noise_sweep"] == own["noise_sweep"]
