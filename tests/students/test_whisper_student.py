"""The ``whisper`` student family and its log-mel front-end, on tiny random Whisper configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from train_fixtures import save_tiny_whisper

from pipeline.frontends.base import build_frontend
from pipeline.frontends.whisper_logmel import GraphLogMel, WhisperLogMel, mel_filters
from pipeline.students.pretrained import PretrainedError, load_whisper_encoder, resolve_pretrained
from pipeline.students.registry import StudentError, build_student, config_dict
from pipeline.students.whisper import WhisperInputError, WhisperStudent, WhisperStudentConfig

MELS, POSITIONS = 8, 20  # 20 encoder positions: at most 40 log-mel frames


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random WhisperForConditionalGeneration saved with save_pretrained."""
    from transformers import WhisperForConditionalGeneration

    folder = save_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"), MELS, POSITIONS, encoder_layers=3)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return folder, model


def make_student(folder, **overrides) -> WhisperStudent:
    torch.manual_seed(1)
    values = {"pretrained": str(folder), "num_intents": 5, "teacher_dim": 12, "ctc_vocab_size": 7,
              "dropout": 0.0, **overrides}  # fmt: skip
    return WhisperStudent.from_pretrained(WhisperStudentConfig(**values)).eval()


def test_encoder_equals_transformers_on_a_full_window(tiny_whisper):
    folder, model = tiny_whisper
    assert resolve_pretrained(folder).kind == "hf"
    student = make_student(folder, freeze="encoder", extra_layers=0)
    features = torch.randn(2, 2 * POSITIONS, MELS)
    with torch.no_grad():
        expected = model.model.encoder(features.transpose(1, 2)).last_hidden_state
        states, frames = student.encode_frozen(features, torch.tensor([2 * POSITIONS] * 2))
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    assert frames.tolist() == [POSITIONS, POSITIONS]


def test_output_does_not_depend_on_batch_padding(tiny_whisper):
    student = make_student(tiny_whisper[0], freeze="top:1")
    features, lengths = torch.randn(3, 31, MELS), torch.tensor([31, 17, 6])
    for index, length in enumerate(lengths.tolist()):
        features[index, length:] = 0
    with torch.no_grad():
        batched = student(features, lengths, return_layers=True)
        for index, length in enumerate(lengths.tolist()):
            alone = student(
                features[index : index + 1, :length], lengths[index : index + 1], return_layers=True
            )
            torch.testing.assert_close(alone.logits[0], batched.logits[index], atol=1e-5, rtol=1e-4)
            frames = int(alone.lengths[0])
            torch.testing.assert_close(alone.hidden_states[-1][0], batched.hidden_states[-1][index, :frames],
                                       atol=1e-5, rtol=1e-4)  # fmt: skip
    assert batched.lengths.tolist() == [16, 9, 3]
    assert student.output_lengths(lengths).tolist() == [16, 9, 3]


@pytest.mark.parametrize("freeze", ["encoder", "top:1", "stem"])
def test_forward_equals_forward_from_frozen(tiny_whisper, freeze):
    student = make_student(tiny_whisper[0], freeze=freeze)
    features, lengths = torch.randn(2, 24, MELS), torch.tensor([24, 11])
    features[1, 11:] = 0
    with torch.no_grad():
        direct = student(features, lengths, return_layers=True)
    states, frames = student.encode_frozen(features, lengths)
    assert not states.requires_grad
    staged = student.forward_from_frozen(states, frames, return_layers=True)
    for name in ("logits", "projected", "ctc_log_probs", "lengths"):
        torch.testing.assert_close(getattr(staged, name), getattr(direct, name))
    assert len(staged.hidden_states) == len(staged.attentions) == student.num_layers


def test_freeze_modes_and_parameter_groups(tiny_whisper):
    expectations = {"encoder": (0, 3), "top:2": (2, 1), "stem": (3, 0), "none": (3, 0)}
    for freeze, (trainable, frozen_layers) in expectations.items():
        student = make_student(tiny_whisper[0], freeze=freeze, extra_layers=2)
        assert (student.trainable_pretrained_layers, student.frozen_layers) == (trainable, frozen_layers)
        assert student.num_layers == trainable + 2
        layers = student.encoder.layers
        assert all(
            p.requires_grad == (i >= frozen_layers)
            for i, layer in enumerate(layers)
            for p in layer.parameters()
        )
        assert student.encoder.conv1.weight.requires_grad == (freeze == "none")
        groups = student.parameter_groups(lr=1e-3, pretrained_lr=1e-4, layer_decay=0.5)
        grouped = {id(p) for group in groups for p in group["params"]}
        assert grouped == {id(p) for p in student.parameters() if p.requires_grad}
        rates = {group["name"].removesuffix(".no_decay"): group["lr"] for group in groups}
        assert rates["new"] == 1e-3
        if trainable:
            assert rates["layer_2"] == pytest.approx(1e-4)
        if trainable >= 2:
            assert rates["layer_1"] == pytest.approx(5e-5)
        # matrices take the optimiser's weight decay (as the hf family's), biases and norms none
        optimizer = torch.optim.AdamW(groups, weight_decay=0.05)
        decays = {group["name"]: group["weight_decay"] for group in optimizer.param_groups}
        assert decays["new"] == 0.05 and decays["new.no_decay"] == 0.0
    student = make_student(tiny_whisper[0], freeze="none")
    with pytest.raises(ValueError, match="no frozen part"):
        student.encode_frozen(torch.zeros(1, 4, MELS), torch.tensor([4]))


def test_training_step_touches_only_the_trainable_part(tiny_whisper):
    student = make_student(tiny_whisper[0], freeze="top:1").train()
    features, lengths = torch.randn(2, 20, MELS), torch.tensor([20, 13])
    output = student(features, lengths, return_layers=True)
    loss = output.logits.logsumexp(-1).sum() + sum(h.square().mean() for h in output.hidden_states)
    loss.backward()
    assert student.encoder.layers[0].fc1.weight.grad is None
    assert student.encoder.layers[2].fc1.weight.grad.abs().sum() > 0
    assert student.extra_layers[0].fc1.weight.grad.abs().sum() > 0
    assert not student.encoder.layers[0].training and student.extra_layers[0].training
    for attention in output.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:2]))


def test_the_model_dir_needs_no_pretrained_source(tiny_whisper):
    student = make_student(tiny_whisper[0])
    config = config_dict(student)
    assert config["d_model"] == 16 and config["encoder_layers"] == 3 and config["max_positions"] == POSITIONS
    config["pretrained"] = "/nowhere/at/all"
    rebuilt = build_student("whisper", config)
    rebuilt.load_state_dict(student.state_dict())
    features, lengths = torch.randn(1, 9, MELS), torch.tensor([9])
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.eval()(features, lengths).logits, student(features, lengths).logits
        )
    assert "encoder.embed_positions.weight" in student.state_dict()
    fresh = build_student(
        "whisper", {"pretrained": str(tiny_whisper[0]), "num_intents": 5}
    )  # loads the encoder
    torch.testing.assert_close(fresh.encoder.conv1.weight, student.encoder.conv1.weight)
    with pytest.raises(StudentError, match="pooling"):
        build_student("whisper", {**config, "pooling": "max"})
    assert student.default_frontend() == {"name": "whisper_logmel", "num_mel_bins": MELS}


def test_bad_inputs_and_sources(tiny_whisper, tmp_path):
    student = make_student(tiny_whisper[0])
    with pytest.raises(WhisperInputError, match="longer"):
        student(torch.zeros(1, 2 * POSITIONS + 2, MELS), torch.tensor([2 * POSITIONS + 2]))
    with pytest.raises(PretrainedError, match="does not fit"):
        WhisperStudent(WhisperStudentConfig(pretrained=str(tiny_whisper[0]), num_intents=3, d_model=32))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(PretrainedError, match="not a Whisper model"):
        load_whisper_encoder(tmp_path)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
    voiced = sum(np.sin(2 * np.pi * np.cumsum(pitch) / 16000 * k) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * voiced / 4 + rng.normal(0, 0.01, t.size)).astype(np.float32)


def test_logmel_matches_whisper_feature_extractor():
    import librosa
    from transformers import WhisperFeatureExtractor

    np.testing.assert_allclose(
        mel_filters().numpy(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).T, atol=1e-6
    )
    clips = [speech_like(1.3, 0), speech_like(0.71, 1)]
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.zeros(2, int(lengths.max()))
    for index, clip in enumerate(clips):
        batch[index, : len(clip)] = torch.from_numpy(clip)
    frontend = build_frontend({"name": "whisper_logmel"})
    assert isinstance(frontend, WhisperLogMel)
    features, frames = frontend(batch, lengths)
    assert frames.tolist() == [len(clip) // 160 for clip in clips] == frontend.frame_counts(lengths).tolist()
    reference = WhisperFeatureExtractor()
    for index, clip in enumerate(clips):
        expected = reference(clip, sampling_rate=16000, return_tensors="np").input_features[0].T
        count = int(frames[index])
        np.testing.assert_allclose(features[index, :count].numpy(), expected[:count], atol=1e-4)
        assert features[index, count:].abs().max() == 0 if count < features.shape[1] else True
    graph_features, graph_frames = GraphLogMel()(batch, lengths)
    assert graph_frames.tolist() == frames.tolist()
    torch.testing.assert_close(graph_features, features, atol=2e-4, rtol=0)


def test_onnx_export_with_logmel_in_the_graph(tiny_whisper, tmp_path):
    """The export wrapper (GraphLogMel + student) against PyTorch; int8 leaves the log-mel fp32."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from pipeline.serving.export import FRONTEND_SCOPE, WaveformStudent, export_onnx, quantize_int8

    student = make_student(tiny_whisper[0])
    student = WhisperStudent(dataclasses.replace(student.config, num_mel_bins=80))  # the real log-mel width
    module = WaveformStudent(student, WhisperLogMel())
    path = tmp_path / "whisper.onnx"
    export_onnx(module, path, example_samples=4000)
    assert not module.training and not module.student.training  # as it was before the export
    waveforms, lengths = torch.randn(3, 5600) * 0.1, torch.tensor([5600, 3000, 1700])
    with torch.no_grad():
        expected = module(waveforms, lengths)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, ctc, ctc_lengths = session.run(None, {"waveforms": waveforms.numpy(), "lengths": lengths.numpy()})
    np.testing.assert_allclose(logits, expected[0].numpy(), atol=1e-4)
    assert ctc.shape == tuple(expected[1].shape) and ctc_lengths.tolist() == expected[2].tolist()

    quantize_int8(path, tmp_path / "whisper.int8.onnx")
    nodes = onnx.load(str(tmp_path / "whisper.int8.onnx")).graph.node
    logmel = [node for node in nodes if node.name.startswith(FRONTEND_SCOPE)]
    assert {"Conv", "MatMul"} <= {node.op_type for node in logmel}  # the DFT and the mel banks, fp32
    assert not [node.name for node in logmel if "Integer" in node.op_type or "Quant" in node.op_type]
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in nodes)
