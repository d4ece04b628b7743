"""The speed section of an eval file (:func:`measure_speed`): parameters, weights size, latency at
batch 1 on one CPU thread, real-time factor and batch throughput, on the CPU and on a GPU when
present, for any :class:`~pipeline.serving.model_kinds.LoadedModel` (audio in or text in).

A sequential model (a cascade, whose ASR decodes one utterance at a time on the CPU) is timed on
the CPU only and at batch 1 only: its throughput is ``None``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from pipeline.core.errors import SlukdError
from pipeline.core.timing import measure_on_devices, time_passes
from pipeline.data.audio import SAMPLE_RATE
from pipeline.data.batching import WaveformDataset, pad_sequences
from pipeline.data.manifest import Manifest
from pipeline.serving.model_kinds import WAVEFORM, LoadedModel


class SpeedSettings(Protocol):
    """The settings :func:`measure_speed` reads (``pipeline.evaluation.evaluate.EvaluateConfig`` has them)."""

    latency_utterances: int
    warmup: int
    throughput_batch: int
    throughput_repeats: int


def _waveform_speed(
    model: LoadedModel, clips: list[Tensor], config: SpeedSettings, device: torch.device
) -> dict:
    """Audio in, logits out: latency per clip at batch 1, RTF, and batch throughput on ``device``."""
    model.module.to(device).eval()
    batch_clips = list(itertools.islice(itertools.cycle(clips), config.throughput_batch))
    padded, lengths = pad_sequences(batch_clips)
    padded, lengths = padded.to(device), lengths.to(device)

    def one(index: int) -> None:
        clip = clips[index]
        model.waveform_forward(clip[None].to(device), torch.tensor([clip.numel()], device=device))

    measured = min(config.latency_utterances, len(clips))
    batch = None if model.sequential else (lambda: model.waveform_forward(padded, lengths))
    timing = time_passes(one, batch, measured, len(batch_clips), device, min(config.warmup, len(clips)),
                         config.throughput_repeats)  # fmt: skip
    latencies = timing.pop("latencies")
    seconds = sum(clip.numel() for clip in clips[:measured]) / SAMPLE_RATE
    return {**_speed_fields(timing, latencies), "real_time_factor": sum(latencies) / seconds}


def _text_speed(model: LoadedModel, texts: list[str], config: SpeedSettings, device: torch.device) -> dict:
    """Text in, logits out (tokenising counts): latency at batch 1 and batch throughput on ``device``."""
    model.module.to(device).eval()
    batch = list(itertools.islice(itertools.cycle(texts), config.throughput_batch))
    measured = min(config.latency_utterances, len(texts))
    timing = time_passes(lambda i: model.text_forward([texts[i]], device), lambda: model.text_forward(batch, device),
                         measured, len(batch), device, min(config.warmup, len(texts)), config.throughput_repeats)  # fmt: skip
    latencies = timing.pop("latencies")
    return {**_speed_fields(timing, latencies), "real_time_factor": None}  # no audio to be real time against


def _speed_fields(timing: dict, latencies: list[float]) -> dict:
    return {
        "latency_ms": timing["latency_ms"],
        "latency_utterances": len(latencies),
        "throughput_batch": timing["throughput_batch"],
        "throughput_utterances_per_second": timing["throughput_utterances_per_second"],
    }


def measure_speed(model: LoadedModel, manifest: Manifest, config: SpeedSettings, model_dir: Path) -> dict:
    """Parameters, weights size, latency (batch 1, one CPU thread), RTF and throughput (CPU, GPU).

    Raises:
        SlukdError: an utterance that cannot be read (the message names it).
    """
    batch_items = 0 if model.sequential else min(config.throughput_batch, len(manifest))
    needed = max(config.latency_utterances, config.warmup, batch_items)
    chosen = list(range(min(len(manifest), needed)))
    weights = Path(model_dir) / "model.safetensors"
    if model.weights_bytes is not None:
        weights_bytes: int | None = model.weights_bytes["total"]
    else:
        weights_bytes = weights.stat().st_size if weights.is_file() else None
    result: dict[str, Any] = {
        "parameters": model.num_parameters(),
        "weights_bytes": weights_bytes,
        "weights_bytes_by_part": model.weights_bytes,
        "input": model.input,
        "sequential": model.sequential,
    }
    if model.input == WAVEFORM:
        dataset = WaveformDataset(manifest)
        clips = []
        for index in chosen:
            item = dataset[index]
            if item.error:
                raise SlukdError(item.error)
            clips.append(item.waveform)
        measure = lambda device: _waveform_speed(model, clips, config, device)  # noqa: E731
    else:
        texts = [manifest[i].transcript for i in chosen]
        measure = lambda device: _text_speed(model, texts, config, device)  # noqa: E731
    result.update(measure_on_devices(measure, gpu=not model.sequential))
    model.module.to(model.device)  # back where the accuracy passes need it
    return result
