"""Helpers for the corpus preparation tests: tiny audio files and running a preparer's CLI."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_tone(path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1) -> Path:
    """A quiet sine tone (wav or flac, from the suffix); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    if channels > 1:
        samples = np.stack([samples] * channels, axis=1)
    soundfile.write(str(path), samples, sample_rate)
    return path


def write_garbage(path: Path) -> Path:
    """Bytes that no audio decoder accepts, under an audio suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all\x00\x01\x02" * 20)
    return path


def run_module(module: str, *args: str | os.PathLike) -> subprocess.CompletedProcess:
    """Run ``python -m module args...`` from the repository root; output captured as text."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_lines(stderr: str) -> list[str]:
    """The ERROR lines of a command's log."""
    return [line for line in stderr.splitlines() if " ERROR " in line]


def assert_one_line_error(returncode: int, stderr: str, *fragments: str) -> str:
    """Exit status 1 and exactly one ERROR line holding every fragment; returns the line."""
    assert returncode == 1, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def call_main(main: Callable[[list[str]], int], *args: str | os.PathLike) -> tuple[int, str]:
    """Run a preparer's ``main`` in process; returns its exit status and what it wrote to stderr.

    The root logger's handlers and level are put back afterwards, so the logging that ``main``
    sets up does not outlive the call.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            code = main([str(arg) for arg in args])
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    return code, stderr.getvalue()
