"""Latency, real-time factor and throughput of a model: timing helpers shared by every model kind.

A model kind supplies two closures per device: ``one(i)`` runs item ``i`` alone (batch 1) and
``batch()`` runs one throughput batch; :func:`time_passes` times them and :func:`measure_on_devices`
runs that on one CPU thread (latency), with the process's own thread count (CPU throughput), and
on the GPU when there is one. Every timing waits for the device (``torch.cuda.synchronize``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

Run = Callable[[], None]


def synchronizer(device: torch.device) -> Run:
    """A function that waits until ``device`` has finished its queued work (a no-op on CPU)."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return synchronize


def median_seconds(run: Run, repeats: int, synchronize: Run) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``run`` (each waited for)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads (the old count is restored)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def time_passes(one: Callable[[int], None], batch: Run | None, items: int, batch_size: int,
                device: torch.device, warmup: int = 3, repeats: int = 3) -> dict:  # fmt: skip
    """Latency at batch 1 over ``items`` items (after ``warmup`` untimed ones) and batch throughput.

    Returns:
        ``latency_ms`` (median), ``latencies`` (seconds, one per item), ``throughput_batch``,
        ``throughput_utterances_per_second`` (median of ``repeats`` batch passes after one untimed;
        both ``None`` when ``batch`` is ``None``).
    """
    synchronize = synchronizer(device)
    for index in range(warmup):
        one(index)
    synchronize()
    latencies = [median_seconds(lambda i=index: one(i), 1, synchronize) for index in range(items)]
    if batch is None:
        return {"latency_ms": 1000 * statistics.median(latencies), "latencies": latencies,
                "throughput_batch": None, "throughput_utterances_per_second": None}  # fmt: skip
    batch()
    synchronize()
    batch_seconds = median_seconds(batch, repeats, synchronize)
    return {
        "latency_ms": 1000 * statistics.median(latencies),
        "latencies": latencies,
        "throughput_batch": batch_size,
        "throughput_utterances_per_second": batch_size / batch_seconds,
    }


def measure_on_devices(measure: Callable[[torch.device], dict], gpu: bool = True) -> dict:
    """``measure(device)`` on the CPU and, when present (and ``gpu``), the GPU.

    On the CPU the latency is measured on one thread and the throughput with the process's own
    thread count (a second pass when that is more than one and a throughput was measured); the
    result says which.

    Returns:
        ``{"cpu": {..., "latency_threads": 1, "throughput_threads": N}, "cuda": {...}}``.
    """
    result: dict = {}
    threads = torch.get_num_threads()
    with torch_threads(1):
        single = measure(torch.device("cpu"))
    if threads > 1 and single.get("throughput_utterances_per_second") is not None:
        single["throughput_utterances_per_second"] = measure(torch.device("cpu"))[
            "throughput_utterances_per_second"
        ]
    result["cpu"] = {**single, "latency_threads": 1, "throughput_threads": threads}
    if gpu and torch.cuda.is_available():
        result["cuda"] = measure(torch.device("cuda"))
    return result
