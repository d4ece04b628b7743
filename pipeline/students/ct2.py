"""A reader for CTranslate2 ``model.bin`` files (the faster-whisper format), numpy only.

Layout (format version 6, little-endian)::

    uint32 version (6) | string spec name | uint32 revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dims[rank] | uint8 dtype | uint32 byte count | bytes
    uint32 alias count | per alias: string alias | string target

A string is a uint16 byte count followed by the bytes (CTranslate2 writes a trailing NUL, which
is stripped). The file is memory-mapped and only its index is parsed up front; a variable's
bytes are read when asked for, so taking the Whisper encoder out of a 75 MB file touches 16 MB.

:func:`whisper_encoder_state_dict` maps a ``WhisperSpec``'s encoder onto the parameter names of
Hugging Face's ``WhisperEncoder`` (``conv1.weight``, ``layers.0.self_attn.q_proj.weight``, ...),
splitting the fused q/k/v projection (Whisper's k projection has no bias: CTranslate2 stores
zeros there, and a non-zero k bias is refused rather than dropped).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import SlukdError

SUPPORTED_VERSIONS = (6,)
# CTranslate2's DataType enum, in file order
DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
                 "float16": np.float16, "bfloat16": np.uint16}  # fmt: skip
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_LAYER_NAME = re.compile(r"^encoder/layer_(\d+)/")


class CT2FormatError(SlukdError, ValueError):
    """A ``model.bin`` that is not a readable CTranslate2 model, or not the model that was expected."""


@dataclass(frozen=True)
class CT2Variable:
    """Where one variable's bytes lie in the file."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # one of DTYPES' values
    offset: int
    nbytes: int


class CT2Model:
    """The index of a ``model.bin`` over a read-only memory map; arrays are read on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as stream:
                self._buffer = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:  # ValueError: mmap of an empty file
            raise CT2FormatError(f"{self.path}: cannot read a CTranslate2 model ({error})") from error
        self.version, self.spec, self.revision = 0, "", 0
        self.variables: dict[str, CT2Variable] = {}
        self.aliases: dict[str, str] = {}
        try:
            self._read_index()
        except struct.error as error:
            raise CT2FormatError(f"{self.path}: truncated CTranslate2 model ({error})") from error

    def format_error(self, problem: str) -> CT2FormatError:
        return CT2FormatError(f"{self.path}: {problem}")

    def _read_index(self) -> None:
        buffer, offset = self._buffer, 0

        def number(fmt: str) -> int:
            nonlocal offset
            (value,) = struct.unpack_from("<" + fmt, buffer, offset)
            offset += struct.calcsize("<" + fmt)
            return value

        def string() -> str:
            nonlocal offset
            size = number("H")
            raw = buffer[offset : offset + size]
            if len(raw) != size:
                raise self.format_error("truncated CTranslate2 model (a name runs past the end)")
            offset += size
            try:
                return raw.rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError as error:
                raise self.format_error(
                    f"not a CTranslate2 model (a name is not UTF-8 at byte {offset})"
                ) from error

        self.version = number("I")
        if self.version not in SUPPORTED_VERSIONS:
            raise self.format_error(
                f"not a CTranslate2 model of a supported format version (read {self.version}, "
                f"supported {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        self.spec, self.revision = string(), number("I")
        for _ in range(number("I")):
            name = string()
            shape = tuple(number("I") for _ in range(number("B")))
            code = number("B")
            if code not in DTYPES:
                raise self.format_error(f"variable {name!r} has an unknown dtype code {code}")
            dtype, nbytes = DTYPES[code], number("I")
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY_DTYPES[DTYPES[code]]).itemsize
            if nbytes != expected:
                raise self.format_error(
                    f"variable {name!r} {list(shape)} {dtype} holds {nbytes} bytes, not {expected}"
                )
            if offset + nbytes > len(buffer):
                raise self.format_error(f"truncated CTranslate2 model (variable {name!r} runs past the end)")
            self.variables[name] = CT2Variable(name, shape, dtype, offset, nbytes)
            offset += nbytes
        if offset < len(buffer):
            for _ in range(number("I")):
                alias, target = string(), string()
                self.aliases[alias] = target
        if offset != len(buffer):
            raise self.format_error(
                f"{len(buffer) - offset} unexpected bytes after the variables and aliases"
            )

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def variable(self, name: str) -> CT2Variable:
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise self.format_error(f"has no variable {name!r} (spec {self.spec})")
        return self.variables[name]

    def array(self, name: str) -> np.ndarray:
        """A variable as a read-only numpy array in its stored dtype (bfloat16 as float32)."""
        variable = self.variable(name)
        stored = np.frombuffer(self._buffer, _NUMPY_DTYPES[variable.dtype], int(np.prod(variable.shape, dtype=np.int64)),
                               variable.offset).reshape(variable.shape)  # fmt: skip
        if variable.dtype == "bfloat16":
            return (stored.astype(np.uint32) << 16).view(np.float32)
        return stored

    def float_array(self, name: str) -> np.ndarray:
        """A floating-point variable as float32; quantized (int8/int16) weights are refused."""
        variable = self.variable(name)
        if variable.dtype not in FLOAT_DTYPES:
            raise self.format_error(
                f"variable {name!r} is {variable.dtype} (a quantized model); re-convert it with "
                "ct2-transformers-converter --quantization float16 (or float32)"
            )
        return self.array(name).astype(np.float32)

    def scalar(self, name: str) -> int:
        return int(self.array(name).reshape(-1)[0])


def whisper_encoder_state_dict(model: CT2Model) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """A ``WhisperSpec``'s encoder as (dimensions, float32 arrays named like HF's ``WhisperEncoder``).

    Dimensions: ``num_mel_bins``, ``d_model``, ``num_layers``, ``num_heads``, ``ffn_dim``,
    ``max_positions``. Raises :class:`CT2FormatError` naming the file for anything missing or
    inconsistent.
    """
    if model.spec != "WhisperSpec":
        raise model.format_error(f"is a {model.spec or 'nameless'} model, not a Whisper model (WhisperSpec)")
    layers = sorted({int(m.group(1)) for name in model.variables if (m := _LAYER_NAME.match(name))})
    if not layers or layers != list(range(len(layers))):
        raise model.format_error(f"encoder layers are not numbered 0..N-1 (found {layers})")
    arrays: dict[str, np.ndarray] = {}
    for index in ("1", "2"):
        arrays[f"conv{index}.weight"] = model.float_array(f"encoder/conv{index}/weight")
        arrays[f"conv{index}.bias"] = model.float_array(f"encoder/conv{index}/bias")
    arrays["embed_positions.weight"] = model.float_array("encoder/position_encodings/encodings")
    arrays["layer_norm.weight"] = model.float_array("encoder/layer_norm/gamma")
    arrays["layer_norm.bias"] = model.float_array("encoder/layer_norm/beta")
    d_model, num_mel_bins, _ = arrays["conv1.weight"].shape
    for layer in layers:
        arrays.update(_whisper_layer(model, layer, d_model))
    dimensions = {
        "num_mel_bins": int(num_mel_bins),
        "d_model": int(d_model),
        "num_layers": len(layers),
        "num_heads": model.scalar("encoder/num_heads") if "encoder/num_heads" in model else d_model // 64,
        "ffn_dim": int(arrays["layers.0.fc1.weight"].shape[0]),
        "max_positions": int(arrays["embed_positions.weight"].shape[0]),
    }
    _check_whisper_shapes(model, dimensions, arrays)
    return dimensions, arrays


def _whisper_layer(model: CT2Model, layer: int, d_model: int) -> dict[str, np.ndarray]:
    source, target = f"encoder/layer_{layer}", f"layers.{layer}"
    fused_weight = model.float_array(f"{source}/self_attention/linear_0/weight")
    fused_bias = model.float_array(f"{source}/self_attention/linear_0/bias")
    if fused_weight.shape != (3 * d_model, d_model) or fused_bias.shape != (3 * d_model,):
        raise model.format_error(
            f"{source}/self_attention/linear_0 is {list(fused_weight.shape)}, not a fused q,k,v "
            f"[{3 * d_model}, {d_model}]"
        )
    if np.abs(fused_bias[d_model : 2 * d_model]).max() > 0:
        raise model.format_error(f"{source} has a non-zero k bias, which a Whisper encoder does not have")
    arrays = {
        f"{target}.self_attn.q_proj.weight": fused_weight[:d_model],
        f"{target}.self_attn.q_proj.bias": fused_bias[:d_model],
        f"{target}.self_attn.k_proj.weight": fused_weight[d_model : 2 * d_model],
        f"{target}.self_attn.v_proj.weight": fused_weight[2 * d_model :],
        f"{target}.self_attn.v_proj.bias": fused_bias[2 * d_model :],
    }
    names = {
        "self_attn.out_proj": "self_attention/linear_1",
        "self_attn_layer_norm": "self_attention/layer_norm",
        "fc1": "ffn/linear_0",
        "fc2": "ffn/linear_1",
        "final_layer_norm": "ffn/layer_norm",
    }
    for hf_name, ct2_name in names.items():
        if ct2_name.endswith("layer_norm"):
            arrays[f"{target}.{hf_name}.weight"] = model.float_array(f"{source}/{ct2_name}/gamma")
            arrays[f"{target}.{hf_name}.bias"] = model.float_array(f"{source}/{ct2_name}/beta")
        else:
            arrays[f"{target}.{hf_name}.weight"] = model.float_array(f"{source}/{ct2_name}/weight")
            arrays[f"{target}.{hf_name}.bias"] = model.float_array(f"{source}/{ct2_name}/bias")
    return arrays


def _check_whisper_shapes(model: CT2Model, dimensions: dict[str, int], arrays: dict[str, np.ndarray]) -> None:
    d, ffn, mels = dimensions["d_model"], dimensions["ffn_dim"], dimensions["num_mel_bins"]
    expected = {
        "conv1.weight": (d, mels, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3), "conv2.bias": (d,),
        "embed_positions.weight": (dimensions["max_positions"], d), "layer_norm.weight": (d,),
        "layer_norm.bias": (d,),
    }  # fmt: skip
    for layer in range(dimensions["num_layers"]):
        prefix = f"layers.{layer}."
        expected.update({
            prefix + "self_attn.out_proj.weight": (d, d), prefix + "self_attn.out_proj.bias": (d,),
            prefix + "self_attn_layer_norm.weight": (d,), prefix + "self_attn_layer_norm.bias": (d,),
            prefix + "fc1.weight": (ffn, d), prefix + "fc1.bias": (ffn,),
            prefix + "fc2.weight": (d, ffn), prefix + "fc2.bias": (d,),
            prefix + "final_layer_norm.weight": (d,), prefix + "final_layer_norm.bias": (d,),
        })  # fmt: skip
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise model.format_error(
                f"encoder variable for {name} is {list(arrays[name].shape)}, expected {list(shape)}"
            )
    if d % dimensions["num_heads"]:
        raise model.format_error(f"encoder width {d} is not divisible by its {dimensions['num_heads']} heads")
