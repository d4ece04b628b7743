"""Training checkpoints: one file per epoch with everything an exact resume needs.

``epoch-NNNN.pt`` holds the model (student and loss), optimiser, scheduler, the run's state
(epoch, step, early stopping, history, log rows, as JSON), every RNG state and the run's
fingerprint (config + inputs). Only tensors and plain containers are saved, so checkpoints
load with ``weights_only=True``. The latest and the ``keep`` best epochs are kept, so the best
ones can be averaged at the end (:func:`average_best`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.errors import SlukdError

logger = logging.getLogger(__name__)


class CheckpointError(SlukdError):
    """A checkpoint that belongs to another run (config or data changed)."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training run draws from (torch, CUDA, Python, numpy, the run's generator)."""
    state = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_position": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    python = state["python"]
    random.setstate((3, tuple(int(x) for x in python[:-1]), None))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_position"], 0, 0.0)
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.pt"


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest ``epoch-*.pt`` in ``folder`` (``None`` when there is none)."""
    checkpoints = sorted(folder.glob("epoch-*.pt")) if folder.is_dir() else []
    return checkpoints[-1] if checkpoints else None


def ranked_epochs(history: list[dict]) -> list[int]:
    """Epochs best first: higher valid accuracy, then lower valid loss."""
    ranked = sorted(history, key=lambda h: (-h["valid_accuracy"], h["valid_loss"]))
    return [h["epoch"] for h in ranked]


def save_checkpoint(folder: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict, generator: torch.Generator,
                    fingerprint: dict, keep: int) -> Path:  # fmt: skip
    """Write ``epoch-NNNN.pt`` atomically; keep it and the ``keep`` best epochs of ``state["history"]``."""
    path = checkpoint_path(folder, epoch)
    temporary = path.with_suffix(".pt.tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": json.dumps(state),
            "rng": rng_state(generator),
            "fingerprint": json.loads(json.dumps(fingerprint)),
        },
        temporary,
    )
    os.replace(temporary, path)
    wanted = set(ranked_epochs(state["history"])[:keep]) | {epoch}
    for old in folder.glob("epoch-*.pt"):
        if int(old.stem.split("-")[1]) not in wanted:
            old.unlink()
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                    fingerprint: dict) -> dict:  # fmt: skip
    """Restore a checkpoint into the run's objects and RNGs; returns the run's state.

    Raises:
        CheckpointError: the checkpoint was written by a run of another config or data.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["fingerprint"] != json.loads(json.dumps(fingerprint)):
        raise CheckpointError(
            f"{path}: checkpoint of another config or data; use another output dir or remove it"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"], generator)
    return json.loads(saved["state"])


def average_best(folder: Path, history: list[dict], count: int, prefix: str) -> dict[str, Tensor] | None:
    """The weights under ``prefix`` (stripped) of the best epoch, or the mean of the ``count`` best.

    Returns ``None`` when none of the chosen checkpoints is on disk.
    """
    chosen = ranked_epochs(history)[: max(1, count)]
    states = []
    for epoch in chosen:
        path = checkpoint_path(folder, epoch)
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)["model"]
            states.append({k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)})
    if not states:
        return None
    if len(states) == 1:
        return states[0]
    logger.info("averaging the weights of epochs %s", chosen[: len(states)])
    return {key: sum(s[key].float() for s in states) / len(states) for key in states[0]}
