"""Deployment export: a student model dir as one ONNX graph from waveform to intent logits.

The graph takes ``waveforms`` (float32 ``[batch, samples]``, 16 kHz mono in [-1, 1], zero-padded)
and ``lengths`` (int64 ``[batch]``, valid samples) and returns ``logits`` (float32 ``[batch,
intents]``), plus ``ctc_log_probs`` ``[batch, frames, vocab]`` and ``ctc_lengths`` ``[batch]``
when the student has a CTC head, and ``slot_logits_<slot>`` ``[batch, classes]`` per slot head (the
metadata's ``slot_heads`` lists each output with its slot and classes). Batch and length axes are dynamic.

Every student family exports: the model dir's ``config.json`` names the family and its
front-end, and the front-end is inside the graph in its export form
(:meth:`pipeline.frontends.base.FrontEnd.graph_module`, under the graph scope ``/frontend/``):

- ``fbank`` (``transformer``): :class:`pipeline.frontends.base.GraphFbank`, every per-frame linear step
  (DC offset removal, pre-emphasis, window, the real DFT) folded into one precomputed
  ``[2 * (fft/2 + 1), window]`` matrix applied as a strided 1-D convolution, then the power
  spectrum, mel banks, log floor and the model's global CMVN;
- ``whisper_logmel`` (``whisper``): :class:`pipeline.frontends.whisper_logmel.GraphLogMel`, the same
  idea for Whisper's log-mel (no padding to 30 s: the encoder slices its positional table);
- ``waveform`` (``hf``): :class:`pipeline.students.hf.GraphWaveform`, the per-utterance z-norm.

``--int8`` applies onnxruntime's dynamic quantization to the student's matrix multiplications
only; every node of the front-end stays fp32. Measured on 200 synthetic_small test files:
quantizing the filterbank too (onnxruntime's defaults, which include Conv) took accuracy from
0.805 to 0.0 and made batch-1 latency 4x slower; with the filterbank in fp32, int8 keeps 0.805 and
its largest logit difference from PyTorch is 0.22. The packaged Whisper tiny.en student (frozen
encoder, one extra layer; 2026-12-01, one thread, a 3 s command, 2 shared CPU cores under load,
best / median of 100): PyTorch fp32 52 / 74 ms, ONNX fp32 17 / 27 ms, ONNX int8 8 / 13 ms
(41 MB -> 14 MB; fp32 logits within 1e-6 of PyTorch on 16 real files).

Everything a runtime needs travels in the ONNX ``metadata_props``
(:data:`pipeline.serving.model_dir.ONNX_METADATA_KEYS`);
a sidecar ``<name>.onnx.json`` records sizes, the source model and the verification numbers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.errors import SlukdError
from pipeline.core.io import file_sha256, write_json
from pipeline.data.audio import AudioError
from pipeline.frontends.base import FrontEnd, FrontEndError
from pipeline.serving.inference import IntentRecognizer
from pipeline.serving.inputs import pad_waveforms
from pipeline.serving.model_dir import (
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    LoadedStudent,
    load_model_dir,
)
from pipeline.serving.rejection import rejection_metadata
from pipeline.students.registry import min_input_length

logger = logging.getLogger(__name__)

OPSET = 17
FORMATS = ("onnx",)
FRONTEND_SCOPE = "/frontend/"  # graph node names of WaveformStudent.frontend (kept fp32 by --int8)


class ExportError(SlukdError, RuntimeError):
    """An export that cannot be done, or whose verification fails."""


class WaveformStudent(nn.Module):
    """Waveform in, logits out: the student's front-end in its export form, then the student.

    Built in eval mode, the wrapper itself included: ``torch.onnx.export`` puts a module back in
    its own training mode afterwards, which would switch the student's dropout on.
    """

    def __init__(self, student: nn.Module, frontend: FrontEnd) -> None:
        super().__init__()
        try:
            self.frontend = frontend.graph_module(min_input_length(student))
        except FrontEndError as error:
            raise ExportError(str(error)) from None
        self.student = student
        self.has_ctc = bool(student.has_ctc)
        self.slot_names = list(getattr(student, "slot_names", []))
        self.eval()

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        features, counts = self.frontend(waveforms, lengths)
        output = self.student(features, counts)
        slots = tuple(output.slot_logits[name] for name in self.slot_names)
        if self.has_ctc:
            return output.logits, output.ctc_log_probs, output.lengths, *slots
        return (output.logits, *slots)


def waveform_student_from_dir(model_dir: str | os.PathLike) -> tuple[WaveformStudent, LoadedStudent]:
    """Load a student model dir as a :class:`WaveformStudent` (and the loaded dir)."""
    loaded = load_model_dir(model_dir)
    return WaveformStudent(loaded.model, loaded.frontend), loaded


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    onnx_path: Path
    sidecar_path: Path
    info: dict


def export_model(
    model_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    format: str = "onnx",
    int8: bool = False,
    verify_files: list[str | os.PathLike] | None = None,
    max_verify_files: int = 200,
    tolerance: float | None = None,
) -> ExportResult:
    """Export a student model dir to ONNX (fp32, or int8 with ``int8``), verify, write a sidecar.

    Args:
        model_dir: a student model dir (``save_model_dir``).
        out: the ``.onnx`` path (default: ``<model_dir>/model.onnx`` or ``model.int8.onnx``).
        format: only ``onnx``.
        int8: dynamic int8 quantization of the student's MatMul/Gemm weights.
        verify_files: audio files, or ``.jsonl`` manifests whose files are used, to compare
            onnxruntime against the PyTorch model on.
        max_verify_files: at most this many files from the manifests.
        tolerance: fail (ExportError) when the max abs logit difference exceeds it.

    Returns:
        paths and the sidecar's content.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    model_dir = Path(model_dir)
    module, loaded = waveform_student_from_dir(model_dir)
    saved = loaded.config
    out = Path(out) if out else model_dir / ("model.int8.onnx" if int8 else "model.onnx")
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the output name must end in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "slukd_format": ONNX_FORMAT,
        "slukd_format_version": str(ONNX_FORMAT_VERSION),
        "sample_rate": str(loaded.frontend.sample_rate),
        "labels": json.dumps(saved["labels"]),
        "family": saved["family"],
        "frontend": json.dumps(loaded.frontend.extraction_config()),
        "student": json.dumps(saved["student"]),
        "ctc_characters": saved.get("ctc_characters") or "",
        "quantization": "int8-dynamic" if int8 else "none",
        "source_model": str(model_dir),
        "max_seconds": str(getattr(loaded.model, "max_input_seconds", "")),
        **rejection_metadata(saved),  # slukd_rejection, trim_silence
        "slot_heads": json.dumps([{"name": name, "classes": classes, "output": slot_output(name)}
                                  for name, classes in loaded.slot_classes.items()]),
    }  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out.parent) as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        output_names = export_onnx(module, fp32_path)
        fp32_size = fp32_path.stat().st_size
        final = fp32_path
        if int8:
            final = Path(scratch) / "int8.onnx"
            quantize_int8(fp32_path, final)
        _set_metadata(final, metadata)
        temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        os.replace(final, temporary)
    os.replace(temporary, out)
    logger.info(
        "%s: exported in %.1f s (%.2f MB)", out, time.perf_counter() - started, out.stat().st_size / 1e6
    )
    info = {
        "onnx": out.name,
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "opset": OPSET,
        "quantization": metadata["quantization"],
        "source_model": str(model_dir),
        "size_bytes": out.stat().st_size,
        "fp32_size_bytes": fp32_size,
        "sha256": file_sha256(out),
        "inputs": {"waveforms": "float32 [batch, samples]", "lengths": "int64 [batch]"},
        "outputs": {name: OUTPUT_SHAPES.get(name, "float32 [batch, slot classes]") for name in output_names},
        "sample_rate": int(metadata["sample_rate"]),
        "num_intents": len(saved["labels"]["intents"]),
        "metadata_keys": sorted(metadata),
        "verification": None,
    }
    if verify_files:
        info["verification"] = verify_onnx(out, model_dir, verify_files, max_verify_files)
    sidecar = sidecar_path(out)
    write_json(sidecar, info)
    if tolerance is not None and info["verification"]:
        difference = info["verification"]["max_abs_logit_difference"]
        if difference > tolerance:
            raise ExportError(
                f"{out}: max abs logit difference {difference:.3g} exceeds the tolerance {tolerance:g}"
            )
    return ExportResult(out, sidecar, info)


OUTPUT_SHAPES = {
    "logits": "float32 [batch, intents]",
    "ctc_log_probs": "float32 [batch, frames, ctc_vocab]",
    "ctc_lengths": "int64 [batch]",
}


def slot_output(name: str) -> str:
    """The graph output of a slot's head (metadata ``slot_heads`` maps outputs to slots)."""
    return f"slot_logits_{name}"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def export_onnx(module: WaveformStudent, path: Path, example_samples: int = 48000) -> list[str]:
    """Trace ``module`` to an fp32 ONNX file with dynamic batch and length axes; returns output names.

    The trace runs a batch of two: ``example_samples`` samples (default 3 s) and two thirds of that.
    """
    import warnings

    output_names = ["logits", "ctc_log_probs", "ctc_lengths"] if module.has_ctc else ["logits"]
    output_names += [slot_output(name) for name in module.slot_names]
    example = (
        torch.randn(2, example_samples) * 0.1,
        torch.tensor([example_samples, 2 * example_samples // 3]),
    )
    dynamic_axes = {"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
    if module.has_ctc:
        dynamic_axes.update({"ctc_log_probs": {0: "batch", 1: "frames"}, "ctc_lengths": {0: "batch"}})
    dynamic_axes.update({name: {0: "batch"} for name in output_names if name.startswith("slot_logits_")})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        torch.onnx.export(
            module, example, str(path), input_names=["waveforms", "lengths"], output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    return output_names


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the student's MatMul/Gemm weights; the front-end stays fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    frontend_nodes = [node.name for node in graph.node if node.name.startswith(FRONTEND_SCOPE)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every tensor on the root logger
    try:
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=frontend_nodes,
        )  # fmt: skip
    finally:
        root.setLevel(level)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "slukd student: waveform -> intent logits (the front-end inside)"
    onnx.save(model, str(path))


def verify_onnx(onnx_path: str | os.PathLike, model_dir: str | os.PathLike, files: list[str | os.PathLike],
                max_files: int = 200) -> dict:  # fmt: skip
    """Compare an exported graph with the PyTorch student on real audio files.

    Returns max/mean abs logit difference, argmax agreement, and how many files were used.
    """

    paths = expand_verify_files(files, max_files)
    if not paths:
        raise ExportError("no audio files to verify on")
    reference = IntentRecognizer.from_pretrained(model_dir)
    exported = IntentRecognizer.from_pretrained(onnx_path)
    differences, agreements, used, unreadable, slot_differences = [], 0, 0, 0, []
    for start in range(0, len(paths), 16):
        waveforms = []
        for path in paths[start : start + 16]:
            try:
                waveforms.append(reference.load(path)[0])
            except AudioError as error:
                logger.warning("verification skips %s", error)
                unreadable += 1
        if not waveforms:
            continue
        batch, lengths = pad_waveforms(waveforms)
        expected, actual = reference.forward(batch, lengths), exported.forward(batch, lengths)
        slot_differences += [np.abs(expected.slot_logits[name] - actual.slot_logits.get(name, np.inf)).max()
                             for name in expected.slot_logits]  # fmt: skip
        expected, actual = expected.logits, actual.logits
        differences.append(np.abs(expected - actual).max(axis=1))
        agreements += int((expected.argmax(1) == actual.argmax(1)).sum())
        used += len(waveforms)
    if not used:
        raise ExportError("none of the verification files could be read")
    difference = np.concatenate(differences)
    result = {
        "files": used,
        "unreadable_files": unreadable,
        "max_abs_logit_difference": float(difference.max()),
        "mean_abs_logit_difference": float(difference.mean()),
        "argmax_agreement": agreements / used,
        **({"max_abs_slot_logit_difference": float(max(slot_differences))} if slot_differences else {}),
    }
    logger.info(
        "%s vs PyTorch on %d files: max abs logit difference %.3g, argmax agreement %.2f%%",
        onnx_path, used, result["max_abs_logit_difference"], 100 * result["argmax_agreement"],
    )  # fmt: skip
    return result


def expand_verify_files(files: list[str | os.PathLike], max_files: int) -> list[Path]:
    """Audio files as given; a ``.jsonl`` manifest contributes up to ``max_files`` of its files."""
    from pipeline.data.manifest import read_manifest

    paths: list[Path] = []
    for item in files:
        item = Path(item)
        if item.suffix == ".jsonl":
            manifest = read_manifest(item)
            paths += [manifest.audio_path(utterance) for utterance in list(manifest)[:max_files]]
        else:
            paths.append(item)
    return paths
