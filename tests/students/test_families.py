"""Every student family end to end: distilled with every loss through ``train_student``, then
``slukd predict`` and ``slukd export`` (fp32 and int8, verified on real files) on the model dir.

The pretrained families start from tiny random encoders saved to temp folders and loaded back
through the real ``from_pretrained`` path (Whisper; wav2vec2 with a 50 Hz frame rate, as the
real ones). The teacher is a tiny random BERT fine-tuned for two epochs, so the targets have
intent logits. The corpus has slots (action, object, location), so every family gets slot heads,
trained with CE and distilled from the teacher's slot heads, exported as ONNX outputs and decoded
jointly by predict. One epoch on the ``tiny`` corpus per family: this checks that the pieces fit
(losses, layer maps, front-ends, the graph), not what they learn.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from train_fixtures import inputs_for, make_corpus, make_teacher_targets, save_tiny_whisper

from pipeline.cli import main as cli
from pipeline.data.audio import AudioError
from pipeline.data.manifest import read_manifest
from pipeline.serving.export import sidecar_path
from pipeline.serving.inference import MAX_SECONDS, IntentRecognizer
from pipeline.serving.model_dir import load_model_dir
from pipeline.training.train import load_experiment_config, train_student

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

LOSSES = ["ce", "logits", "sentence", "hidden", "attention", "ctc", "slot_ce", "slot_logits"]
SLOTS = {"action": 7, "object": 14, "location": 4}  # classes per head: none appended where not a value
COMMON = [
    "train.epochs=1", "train.patience=0", "train.device=cpu", "train.max_frames=4000", "train.warmup_steps=2",
    "train.learning_rate=0.003", "distill.logits=1", "distill.sentence=1", "distill.hidden=1",
    "distill.attention=1", "distill.ctc=0.3",
]  # fmt: skip


def save_tiny_wav2vec2(folder: Path) -> Path:
    """A tiny random wav2vec2 (2 layers, width 32) whose feature encoder strides 320 samples (50 Hz,
    as the real ones; at train_fixtures' 1.6 kHz, verifying 16 files at once takes gigabytes)."""
    from transformers import AutoModel, Wav2Vec2Config

    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


@dataclass
class Setup:
    corpus: Path
    targets: Path  # teacher targets with intent logits, hidden states and attention maps
    encoders: Path  # the tiny pretrained encoders
    test_files: list[Path]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    root = tmp_path_factory.mktemp("families")
    corpus = make_corpus(root)
    targets = make_teacher_targets(corpus, root)
    save_tiny_whisper(root / "encoders" / "whisper", positions=1500)
    save_tiny_wav2vec2(root / "encoders" / "wav2vec2")
    test = read_manifest(corpus / "manifests/test.jsonl")
    return Setup(corpus, targets, root / "encoders", [test.audio_path(u) for u in list(test)[:6]])


def family_settings(family: str, encoders: Path) -> list[str]:
    """Small students; the pretrained ones with a trainable pretrained layer and an extra one, so
    the layer losses reach both kinds."""
    if family == "transformer":
        return ["student.d_model=32", "student.num_layers=2", "student.num_heads=2", "student.feedforward=64",
                "student.conv_channels=8", "distill.alignment=segment"]  # fmt: skip
    if family == "whisper":
        return ["student.family=whisper", f"student.pretrained={encoders / 'whisper'}", "student.freeze=top:1",
                "student.extra_layers=1", "student.pooling=attention", "train.pretrained_lr=1e-3",
                "distill.alignment=interpolate"]  # fmt: skip
    return ["student.family=hf", f"student.pretrained={encoders / 'wav2vec2'}", "student.freeze=top:1",
            "student.extra_layers=1", "student.extra_heads=2", "train.pretrained_lr=1e-3",
            "distill.alignment=pad"]  # fmt: skip


@pytest.mark.parametrize("family", ["transformer", "whisper", "hf"])
def test_family_distils_predicts_and_exports(family, setup, tmp_path, capsys):
    run = tmp_path / "run"
    config = load_experiment_config(None, COMMON + family_settings(family, setup.encoders))
    metrics = train_student(inputs_for(setup.corpus, teacher_targets=setup.targets), run, config)
    assert metrics["losses"] == LOSSES
    with open(run / "train_log.csv") as stream:
        row = next(csv.DictReader(stream))
    for loss in LOSSES:
        value = float(row[f"train_{loss}"])
        assert np.isfinite(value) and value > 0, loss
    loaded = load_model_dir(run)
    assert loaded.family == family and loaded.ctc_characters
    assert loaded.model.config.slot_classes == SLOTS
    assert {name: len(classes) for name, classes in loaded.slot_classes.items()} == SLOTS
    assert json.loads((run / "config.json").read_text())["slot_classes"]["location"][0] == "none"
    expected_frontend = {"transformer": "fbank", "whisper": "whisper_logmel", "hf": "waveform"}[family]
    assert loaded.frontend.name == expected_frontend

    # export fp32 and int8 through the CLI, verified on real files
    manifest = setup.corpus / "manifests/test.jsonl"
    exports = {"fp32": run / "model.onnx", "int8": run / "model.int8.onnx"}
    assert cli.main(["export", "--model", str(run), "--verify", str(manifest), "--tolerance", "1e-3"]) == 0
    assert cli.main(["export", "--model", str(run), "--int8", "--verify", str(manifest)]) == 0
    for kind, path in exports.items():
        info = json.loads(sidecar_path(path).read_text())
        assert info["verification"]["files"] == len(read_manifest(manifest)), kind
        assert info["quantization"] == ("int8-dynamic" if kind == "int8" else "none")
    fp32 = json.loads(sidecar_path(exports["fp32"]).read_text())["verification"]
    assert fp32["argmax_agreement"] == 1.0 and fp32["max_abs_logit_difference"] < 1e-3
    assert fp32["max_abs_slot_logit_difference"] < 1e-3
    int8 = json.loads(sidecar_path(exports["int8"]).read_text())["verification"]
    # int8 weights move this toy model's logits by a few tenths (0.42-0.51 measured across teachers)
    assert int8["max_abs_logit_difference"] < 1.0

    # predict: the model dir and its fp32 export say the same
    answers = {}
    for model in (run, exports["fp32"]):
        assert cli.main(["predict", "--model", str(model), *map(str, setup.test_files)]) == 0
        answers[model] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answers[run]) == len(setup.test_files)
    for torch_line, onnx_line in zip(answers[run], answers[exports["fp32"]], strict=True):
        assert onnx_line["intent"] == torch_line["intent"] and onnx_line["file"] == torch_line["file"]
        assert onnx_line["confidence"] == pytest.approx(torch_line["confidence"], abs=1e-4)
        assert onnx_line["slots"] == torch_line["slots"]
        assert set(torch_line["slot_confidence"]) == set(SLOTS)
        assert onnx_line["command_confidence"] == pytest.approx(torch_line["command_confidence"], abs=1e-4)
        # joint decoding: the printed slots are the printed intent's own (FSC intents are slot combinations)
        fixed = dict(zip(SLOTS, torch_line["intent"].split("_"), strict=True))
        assert torch_line["slots"] == {name: value for name, value in fixed.items() if value != "none"}

    # shapes the traced example did not have: batch 1, a very short input, mixed lengths
    reference = IntentRecognizer.from_pretrained(run)
    exported = IntentRecognizer.from_pretrained(exports["fp32"])
    generator = np.random.default_rng(0)
    for lengths in ([16000], [100], [30000, 900, 12000]):
        waveforms = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
        for row, length in enumerate(lengths):
            waveforms[row, :length] = 0.1 * generator.standard_normal(length)
        lengths = np.array(lengths)
        expected, actual = reference.forward(waveforms, lengths), exported.forward(waveforms, lengths)
        np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3, err_msg=str(lengths))
        assert list(actual.slot_logits) == list(SLOTS)
        for name in SLOTS:
            np.testing.assert_allclose(actual.slot_logits[name], expected.slot_logits[name], atol=1e-3)
        np.testing.assert_array_equal(actual.ctc_lengths, expected.ctc_lengths)

    # Whisper's own 30 s limit holds for both backends: a longer file is that file's error, not a crash
    limit = 30.0 if family == "whisper" else MAX_SECONDS
    assert reference.max_seconds == exported.max_seconds == limit
    if family == "whisper":
        long_file = tmp_path / "long.wav"
        soundfile.write(str(long_file), np.zeros(int(16000 * (limit + 1)), dtype=np.float32), 16000)
        for recognizer in (reference, exported):
            results = dict(recognizer.predict_files([setup.test_files[0], long_file]))
            assert isinstance(results[str(long_file)], AudioError) and "30 s limit" in str(
                results[str(long_file)]
            )
            assert results[str(setup.test_files[0])].intent
