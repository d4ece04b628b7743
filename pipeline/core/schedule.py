"""What both training loops (student and teacher fine-tuning) share: the learning-rate schedule,
bf16 autocast on CUDA, and the per-epoch CSV log.

    scheduler = warmup_scheduler(optimizer, total_steps, warmup_steps=200, decay="cosine")
    with autocast(device):
        loss = model(...)
    write_training_log(run_dir / "train_log.csv", rows)
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.core.io import atomic_write_text

DECAYS = ("cosine", "linear")


def warmup_decay(warmup_steps: int, total_steps: int, decay: str = "cosine") -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over ``warmup_steps``, then cosine or linear decay.

    Cosine decays to 0 at ``total_steps`` (and stays there); linear decays to 0 at ``total_steps``.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def warmup_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, decay: str = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` with :func:`warmup_decay` for every parameter group (per-group factors for
    pretrained parts: :func:`pipeline.students.finetune.group_lr_lambdas`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(warmup_steps, total_steps, decay))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (CPU runs in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def write_training_log(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write one CSV row per epoch atomically; the columns are every key any row has, in order."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buffer.getvalue())
