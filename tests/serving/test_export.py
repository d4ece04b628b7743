"""pipeline.serving.export and `slukd export`: the in-graph front-end, fp32 and int8 ONNX against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from inference_fixtures import tiny_model, write_variant

from pipeline.cli import main as cli
from pipeline.data.audio import load_audio
from pipeline.frontends.base import FbankFrontEnd
from pipeline.frontends.fbank import FbankConfig, FbankExtractor
from pipeline.serving.export import (
    ExportError,
    export_model,
    sidecar_path,
    waveform_student_from_dir,
)
from pipeline.serving.inference import InferenceError, IntentRecognizer
from pipeline.serving.inputs import pad_waveforms
from pipeline.serving.model_dir import ONNX_METADATA_KEYS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.getbasetemp() / "inference_model")


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """fp32 and int8 exports through the CLI, verified on the test manifest."""
    folder = tmp_path_factory.mktemp("onnx")
    manifest = model.data / "manifests" / "test.jsonl"
    paths = {"fp32": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    assert cli.main(["export", "--model", str(model.model_dir), "--out", str(paths["fp32"]),
                     "--verify", str(manifest), "--tolerance", "1e-3"]) == 0  # fmt: skip
    assert cli.main(["export", "--model", str(model.model_dir), "--int8", "--out", str(paths["int8"]),
                     "--verify", str(manifest)]) == 0  # fmt: skip
    return paths


def real_batch(model, count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    return pad_waveforms([load_audio(path) for path in model.test_files[:count]])


@pytest.mark.parametrize(
    "config", [FbankConfig(), FbankConfig(num_mel_bins=40, window="hamming", preemphasis=0.0)]
)
def test_graph_fbank_matches_the_extractor(model, config):
    waveforms, lengths = real_batch(model)
    waveforms, lengths = torch.from_numpy(waveforms), torch.from_numpy(lengths)
    reference, counts = FbankExtractor(config).extract_batch(waveforms, lengths)
    mean, std = np.full(config.num_mel_bins, 8.0), np.full(config.num_mel_bins, 3.0)
    frontend = FbankFrontEnd(config, mean, std)
    graph, graph_counts = frontend.graph_module()(waveforms, lengths)
    eager, eager_counts = frontend(waveforms, lengths)  # the front-end itself, as training runs it
    assert torch.equal(eager_counts, counts) and torch.allclose(eager, graph[:, : eager.shape[1]], atol=2e-3)
    assert torch.equal(graph_counts, counts)
    valid = torch.arange(reference.shape[1])[None] < counts[:, None]
    expected = (reference - 8.0) / 3.0 * valid[..., None]
    assert torch.allclose(graph[:, : reference.shape[1]], expected, atol=2e-3)
    assert not graph[:, reference.shape[1] :].any()  # the padding frames are zeros


def test_fp32_export_matches_pytorch(model, exported):
    info = json.loads(sidecar_path(exported["fp32"]).read_text())
    verification = info["verification"]
    assert verification["files"] == len(model.test_files) and verification["argmax_agreement"] == 1.0
    assert verification["max_abs_logit_difference"] < 1e-3
    assert info["quantization"] == "none" and info["size_bytes"] == exported["fp32"].stat().st_size
    slot_outputs = {
        "slot_logits_action",
        "slot_logits_object",
        "slot_logits_location",
    }  # the corpus has slots
    assert set(info["outputs"]) == {"logits", "ctc_log_probs", "ctc_lengths", *slot_outputs}
    assert verification["max_abs_slot_logit_difference"] < 1e-3
    metadata = {entry.key: entry.value for entry in onnx.load(str(exported["fp32"])).metadata_props}
    heads = json.loads(metadata["slot_heads"])
    assert {head["output"] for head in heads} == slot_outputs
    assert next(head for head in heads if head["name"] == "action")["classes"][-1] == "none"
    assert set(metadata) == set(ONNX_METADATA_KEYS)
    assert metadata["family"] == "transformer" and json.loads(metadata["frontend"])["name"] == "fbank"
    assert json.loads(metadata["labels"])["intents"][0] == "change language_none_none"
    assert not [p.name for p in exported["fp32"].parent.iterdir() if p.name.startswith(".")]  # no temp files
    # dynamic batch and length axes: other batch sizes and lengths than the traced example
    torch_model = IntentRecognizer.from_pretrained(model.model_dir)
    onnx_model = IntentRecognizer.from_pretrained(exported["fp32"])
    for count, crop in ((1, 48000), (5, 7000), (3, 300)):
        waveforms, lengths = real_batch(model, count)
        waveforms, lengths = waveforms[:, :crop], np.minimum(lengths, crop)
        expected, actual = torch_model.forward(waveforms, lengths), onnx_model.forward(waveforms, lengths)
        np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3)
        np.testing.assert_array_equal(actual.ctc_lengths, expected.ctc_lengths)
        for row, frames in enumerate(expected.ctc_lengths):  # past its length, a row is padding
            np.testing.assert_allclose(
                actual.ctc_log_probs[row, :frames], expected.ctc_log_probs[row, :frames], atol=1e-3
            )


def test_int8_export_is_smaller_and_mostly_agrees(model, exported):
    info = json.loads(sidecar_path(exported["int8"]).read_text())
    assert info["quantization"] == "int8-dynamic"
    assert info["size_bytes"] < info["fp32_size_bytes"]
    assert info["verification"]["argmax_agreement"] >= 0.75
    graph = onnx.load(str(exported["int8"])).graph
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)
    assert any(node.name.startswith("/frontend/") for node in graph.node)  # the front-end's nodes...
    assert (
        not [  # ...stay fp32
            node.name
            for node in graph.node
            if node.name.startswith("/frontend/") and "Integer" in node.op_type
        ]
    )


def test_predict_with_the_onnx_model_agrees(capsys, model, exported, tmp_path):
    files = [
        *model.test_files[:4],
        write_variant(model.test_files[4], tmp_path / "x.flac", 44100, channels=2),
    ]
    answers = {}
    for name in (model.model_dir, exported["fp32"]):
        assert cli.main(["predict", "--model", str(name), *map(str, files)]) == 0
        answers[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for torch_line, onnx_line in zip(answers[model.model_dir], answers[exported["fp32"]], strict=True):
        assert onnx_line["intent"] == torch_line["intent"]
        assert onnx_line["confidence"] == pytest.approx(torch_line["confidence"], abs=1e-4)
        assert (
            onnx_line["slots"] == torch_line["slots"] and onnx_line["transcript"] == torch_line["transcript"]
        )


def test_export_errors(capsys, model, exported, tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(model.model_dir, tmp_path / "m.onnx", format="tflite")
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_model(model.model_dir, tmp_path / "m.bin")
    assert cli.main(["export", "--model", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: model dir not found" in capsys.readouterr().err
    plain = tmp_path / "plain.onnx"
    module, _ = waveform_student_from_dir(model.model_dir)
    from pipeline.serving.export import export_onnx

    export_onnx(module, plain)  # a graph without the metadata
    with pytest.raises(InferenceError, match="not a slukd export"):
        IntentRecognizer.from_pretrained(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InferenceError, match="cannot load ONNX model"):
        IntentRecognizer.from_pretrained(garbage)
