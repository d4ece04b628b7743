"""The ``hf`` student family on tiny random wav2vec2 / WavLM encoders saved to temp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    WavLMConfig,
)

from pipeline.core.config import to_dict
from pipeline.core.errors import SlukdError
from pipeline.data.labels import LabelSet
from pipeline.frontends.base import build_frontend
from pipeline.serving.model_dir import load_model_dir, save_model_dir
from pipeline.students.hf import (
    HFStudent,
    HFStudentConfig,
    HFStudentError,
    WaveformFrontEnd,
    conv_output_lengths,
    frames_per_second,
    min_samples_for_frames,
)
from pipeline.students.registry import build_student

TINY = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
    conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    vocab_size=10,
)  # fmt: skip


def save_encoder(folder: Path, config) -> Path:
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory) -> Path:
    """wav2vec2-base style: group-norm feature encoder (no attention mask), post-LN layers."""
    return save_encoder(tmp_path_factory.mktemp("wav2vec2"), Wav2Vec2Config(**TINY))


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory) -> Path:
    """Large-model style: layer-norm feature encoder (attention mask), pre-LN layers, final norm."""
    config = WavLMConfig(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=8)
    return save_encoder(tmp_path_factory.mktemp("wavlm"), config)


def make_student(folder: Path, **settings) -> HFStudent:
    defaults = {"pretrained": str(folder), "num_intents": 4, "teacher_dim": 6, "ctc_vocab_size": 5}
    torch.manual_seed(1)
    return HFStudent(HFStudentConfig(**(defaults | settings)))


def batch(lengths=(1600, 1200, 700)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    lengths = torch.tensor(lengths)
    waveforms = torch.randn(len(lengths), int(lengths.max()), generator=generator) * 0.1
    return WaveformFrontEnd()(waveforms, lengths)


def test_loads_the_saved_weights_through_from_pretrained(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir)
    saved = load_file(str(wav2vec2_dir / "model.safetensors"))
    encoder = student.encoder.state_dict()
    assert saved and all(
        torch.equal(encoder[name], value) for name, value in saved.items() if name in encoder
    )
    assert student.config.hf_config["model_type"] == "wav2vec2"
    assert student.config.hf_config["layerdrop"] == 0.0  # distillation reads every layer
    assert student.config.do_normalize is True  # no preprocessor_config.json: the wav2vec2 default
    assert frames_per_second(student.config) == 1600.0


@pytest.mark.parametrize("fixture", ["wav2vec2_dir", "wavlm_dir"])
def test_forward_returns_the_trainable_layers(fixture: str, request) -> None:
    student = make_student(
        request.getfixturevalue(fixture), freeze="top:2", extra_layers=1, pooling="attention"
    )
    student.eval()
    features, lengths = batch()
    implementation = student.encoder.config._attn_implementation
    output = student(features, lengths, return_layers=True)
    frames = output.lengths.tolist()
    assert (
        frames
        == student.output_lengths(lengths).tolist()
        == conv_output_lengths(lengths, [10, 3], [5, 2]).tolist()
    )
    assert student.num_layers == 3 == len(output.hidden_states) == len(output.attentions)
    for hidden, attention in zip(output.hidden_states, output.attentions, strict=True):
        assert hidden.shape == (3, max(frames), student.hidden_size)
        assert attention.shape == (3, max(frames), max(frames))
        torch.testing.assert_close(attention.sum(-1), torch.ones(3, max(frames)))
    assert output.logits.shape == (3, 4) and output.projected.shape == (3, 6)
    assert output.ctc_log_probs.shape == (3, max(frames), 5)
    assert student.encoder.config._attn_implementation == implementation  # switched back after eager
    plain = student(features, lengths)
    assert plain.hidden_states == [] and plain.attentions == []
    torch.testing.assert_close(plain.logits, output.logits, atol=1e-4, rtol=1e-4)


def test_top_layers_are_the_encoder_layers_outputs(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="top:2").eval()
    captured = {}
    for index, layer in enumerate(student.encoder.encoder.layers):
        layer.register_forward_hook(
            lambda module, args, out, i=index: captured.__setitem__(
                i, out[0] if isinstance(out, tuple) else out
            )
        )
    features, lengths = batch()
    output = student(features, lengths, return_layers=True)
    torch.testing.assert_close(output.hidden_states[0], captured[1])
    torch.testing.assert_close(output.hidden_states[1], captured[2])


def test_attention_mask_makes_padding_harmless(wavlm_dir: Path) -> None:
    student = make_student(wavlm_dir, freeze="none").eval()
    assert student.use_attention_mask
    features, lengths = batch()
    together = student(features, lengths).logits
    alone = torch.cat(
        [student(features[i : i + 1, : lengths[i]], lengths[i : i + 1]).logits for i in range(3)]
    )
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_group_norm_encoders_get_no_attention_mask(wav2vec2_dir: Path) -> None:
    assert not make_student(wav2vec2_dir).use_attention_mask


def test_short_inputs_are_padded_to_one_frame(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, spec_augment=False).eval()
    assert student.min_input_length == min_samples_for_frames(1, [10, 3], [5, 2]) == 20
    output = student(torch.zeros(1, 5, 1), torch.tensor([5]))
    assert output.lengths.tolist() == [1] and torch.isfinite(output.logits).all()


@pytest.mark.parametrize(
    "freeze, stem, embedding, layers, top, num_layers",
    [("encoder", False, False, [False] * 3, False, 1), ("top:1", False, False, [False, False, True], True, 2),
     ("stem", False, True, [True] * 3, True, 4), ("none", True, True, [True] * 3, True, 4)],
)  # fmt: skip
def test_freeze_modes(
    wavlm_dir: Path, freeze: str, stem: bool, embedding: bool, layers: list[bool], top: bool, num_layers: int
) -> None:
    student = make_student(wavlm_dir, freeze=freeze, extra_layers=1)
    parts = student.pretrained_parts()

    def trains(item) -> bool | None:
        parameters = [item] if isinstance(item, torch.nn.Parameter) else list(item.parameters())
        return all(p.requires_grad for p in parameters) if parameters else None  # None: nothing to train

    assert [trains(item) for item in parts.stem] == [stem]
    assert parts.stem == [student.encoder.feature_extractor]
    assert {trains(item) for item in parts.embedding if trains(item) is not None} == {embedding}
    assert [trains(layer) for layer in parts.layers] == layers
    assert [trains(item) for item in parts.top] == [top]
    assert student.num_layers == num_layers
    assert all(p.requires_grad for p in student.classifier.parameters())
    assert {id(p) for p in parts.parameters()} == {id(p) for p in student.encoder.parameters()}


def test_frozen_encoder_is_deterministic_in_train_mode(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="encoder", extra_layers=1)
    student.train()
    assert not student.encoder.training and student.extra_layers[0].training
    features, lengths = batch()
    first = student.encoder(features.squeeze(-1)).last_hidden_state
    second = student.encoder(features.squeeze(-1)).last_hidden_state
    assert torch.equal(first, second)


def test_trainable_layers_keep_the_encoders_masking_and_dropout(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="top:1").train()
    assert student.encoder.training and student.encoder.encoder.layers[2].training
    assert not student.encoder.encoder.layers[0].training and not student.encoder.feature_extractor.training


def test_full_finetuning_groups_reach_the_feature_encoder(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="none")
    rates = {group["name"]: group["lr"] for group in student.parameter_groups(1e-3, 1e-4, layer_decay=0.5)}
    assert rates["stem"] == pytest.approx(1e-4 * 0.5**3) == rates["embedding"]
    assert rates["layer_0"] == pytest.approx(1e-4 * 0.5**2)


def test_parameter_groups(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="top:2", extra_layers=1)
    groups = student.parameter_groups(1e-3, 1e-4, layer_decay=0.5, weight_decay=0.01)
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates["new"] == 1e-3
    assert rates["layer_2"] == pytest.approx(1e-4) and rates["layer_1"] == pytest.approx(5e-5)
    assert not any(
        name.startswith(("layer_0", "embedding", "stem", "top")) for name in rates
    )  # frozen, or none (post-LN)
    grouped = {id(p) for group in groups for p in group["params"]}
    assert grouped == {id(p) for p in student.parameters() if p.requires_grad}


def test_a_few_steps_reduce_the_loss_and_leave_frozen_weights(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="top:1", spec_augment=False)
    frozen = {
        name: p.detach().clone() for name, p in student.encoder.named_parameters() if not p.requires_grad
    }
    optimizer = torch.optim.AdamW(student.parameter_groups(1e-2, 3e-3, weight_decay=0.01))
    features, lengths = batch()
    targets = torch.tensor([0, 1, 2])
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(student(features, lengths).logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert frozen and losses[-1] < 0.5 * losses[0]
    assert all(
        torch.equal(p, frozen[name]) for name, p in student.encoder.named_parameters() if name in frozen
    )


def test_state_dict_round_trip_needs_no_pretrained_folder(wavlm_dir: Path, tmp_path: Path) -> None:
    student = make_student(wavlm_dir, freeze="top:1", extra_layers=1).eval()
    saved = to_dict(student.config)
    saved["pretrained"] = str(tmp_path / "gone")  # a model dir must not read it again
    rebuilt = build_student("hf", saved)
    rebuilt.load_state_dict(student.state_dict())
    rebuilt.eval()
    features, lengths = batch()
    torch.testing.assert_close(rebuilt(features, lengths).logits, student(features, lengths).logits)
    assert rebuilt.num_layers == student.num_layers
    assert rebuilt.default_frontend() == {"name": "waveform", "sample_rate": 16000, "normalize": True}


def test_model_dir_round_trip(wav2vec2_dir: Path, tmp_path: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="top:1", extra_layers=1, pooling="attention").eval()
    frontend = build_frontend(student.default_frontend())
    save_model_dir(tmp_path / "model", student, frontend, LabelSet(["a", "b", "c", "d"]))
    loaded = load_model_dir(tmp_path / "model")
    assert loaded.family == "hf" and isinstance(loaded.frontend, WaveformFrontEnd)
    waveforms, lengths = torch.randn(2, 1500) * 0.1, torch.tensor([1500, 900])
    features, frames = loaded.frontend(waveforms, lengths)
    torch.testing.assert_close(loaded.model.eval()(features, frames).logits, student(features, frames).logits)


def test_waveform_front_end_matches_the_hf_feature_extractor() -> None:
    frontend = build_frontend({"name": "waveform"})
    assert isinstance(frontend, WaveformFrontEnd) and frontend.feature_dim == 1
    assert build_frontend(frontend.to_config()).to_config() == frontend.to_config()
    generator = torch.Generator().manual_seed(3)
    waveforms = torch.randn(2, 800, generator=generator) * 0.3 + 0.1
    lengths = torch.tensor([800, 500])
    features, frames = frontend(waveforms, lengths)
    assert features.shape == (2, 800, 1) and frames.tolist() == [800, 500]
    reference = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    expected = reference(
        [waveforms[0].numpy(), waveforms[1, :500].numpy()], sampling_rate=16000, padding=True
    )
    np.testing.assert_allclose(features.squeeze(-1).numpy(), np.stack(expected["input_values"]), atol=1e-4)
    assert torch.count_nonzero(features[1, 500:]) == 0
    raw, _ = frontend.extract(waveforms, lengths)
    assert torch.equal(WaveformFrontEnd(normalize=False).normalize(raw, lengths), raw)


def test_unloadable_or_wrong_pretrained_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SlukdError, match="cannot load the pretrained encoder"):
        make_student(tmp_path / "missing")
    text_model = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(text_model)
    with pytest.raises(HFStudentError, match="not a speech encoder"):
        make_student(text_model)
    with pytest.raises(ValueError, match="freeze must be one of"):
        HFStudentConfig(freeze="top")


def test_from_pretrained_replaces_a_stale_hf_config(wav2vec2_dir: Path) -> None:
    stale = to_dict(make_student(wav2vec2_dir).config) | {
        "hf_config": {"model_type": "wav2vec2", "hidden_size": 8}
    }
    student = HFStudent.from_pretrained(stale)
    assert student.hidden_size == 32
    saved = load_file(str(wav2vec2_dir / "model.safetensors"))
    name = "encoder.layers.0.attention.k_proj.weight"
    assert torch.equal(student.encoder.state_dict()[name], saved[name])


def test_frozen_encoder_outputs_can_be_stored(wav2vec2_dir: Path) -> None:
    student = make_student(wav2vec2_dir, freeze="encoder", extra_layers=1).eval()
    assert student.has_frozen_part and student.num_layers == 1
    features, lengths = batch()
    states, frames = student.encode_frozen(features, lengths)
    assert not states.requires_grad and frames.tolist() == student.output_lengths(lengths).tolist()
    assert torch.count_nonzero(states[2, frames[2] :]) == 0
    direct = student(features, lengths, return_layers=True)
    stored = student.forward_from_frozen(states, frames, return_layers=True)
    torch.testing.assert_close(stored.logits, direct.logits)
    torch.testing.assert_close(
        stored.hidden_states[0][2, : frames[2]], direct.hidden_states[0][2, : frames[2]]
    )
    trained = make_student(wav2vec2_dir, freeze="top:1")
    assert not trained.has_frozen_part
    with pytest.raises(ValueError, match="only 'encoder'"):
        trained.encode_frozen(features, lengths)


def test_onnx_export_with_the_normalisation_in_the_graph(wavlm_dir: Path, tmp_path: Path) -> None:
    """The export wrapper (front-end graph + student) on a layer-norm encoder with attention masks."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from pipeline.serving.export import WaveformStudent, export_onnx

    student = make_student(wavlm_dir, extra_layers=1)
    module = WaveformStudent(student, build_frontend(student.default_frontend()))
    path = tmp_path / "hf.onnx"
    assert export_onnx(module, path, example_samples=4000) == ["logits", "ctc_log_probs", "ctc_lengths"]
    assert not module.training and not module.student.training  # as it was before the export
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    waveforms, lengths = torch.randn(3, 5600) * 0.1, torch.tensor([5600, 3000, 1700])
    logits, ctc, ctc_lengths = session.run(None, {"waveforms": waveforms.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        expected = module(waveforms, lengths)
    np.testing.assert_allclose(logits, expected[0].numpy(), atol=1e-4)
    assert ctc.shape == tuple(expected[1].shape) and ctc_lengths.tolist() == expected[2].tolist()
