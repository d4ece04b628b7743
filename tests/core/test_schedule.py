"""pipeline.core.schedule: the warm-up + decay schedule, autocast off the GPU, the CSV training log."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from pipeline.core.schedule import autocast, warmup_decay, warmup_scheduler, write_training_log


def test_warmup_then_cosine_or_linear_decay():
    cosine = warmup_decay(10, 110, "cosine")
    assert [cosine(step) for step in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert (
        cosine(60) == pytest.approx(0.5)
        and cosine(110) == pytest.approx(0.0)
        and cosine(500) == pytest.approx(0.0)
    )
    linear = warmup_decay(10, 110, "linear")
    assert linear(60) == pytest.approx(0.5) and linear(200) == 0.0
    assert warmup_decay(0, 10)(0) == 1.0  # no warm-up: the full rate at once
    with pytest.raises(ValueError, match="decay must be one of cosine, linear"):
        warmup_decay(1, 2, "step")


def test_scheduler_and_autocast_and_log(tmp_path):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = warmup_scheduler(optimizer, total_steps=4, warmup_steps=2)
    rates = []
    for _ in range(4):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1.0, 2.0, 2.0, 2.0 * 0.5 * (1 + math.cos(math.pi / 2))])
    with autocast(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    write_training_log(
        tmp_path / "log.csv", [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 2.0, "ctc": 1.0}]
    )
    with open(tmp_path / "log.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows == [{"epoch": "1", "loss": "2.5", "ctc": ""}, {"epoch": "2", "loss": "2.0", "ctc": "1.0"}]
