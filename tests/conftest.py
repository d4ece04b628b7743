"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """On a small shared CPU one torch thread beats two that wait for each other (measured: a
    student forward pass took 225 ms with two threads and 4 ms with one on the loaded 2-core
    machine). Subprocesses the tests start keep their own setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
