"""Where a number was measured: date, versions and hardware, written beside results (eval files,
benchmarks)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from pipeline.core.version import __version__


def environment() -> dict:
    """Date, versions and hardware, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "slukd_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "hardware": {
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
