"""Small audio corpora written by the tests themselves: tones, chirps and noise bursts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from pipeline.data.manifest import Utterance, write_manifest


def tone_corpus(
    folder: Path, count: int = 12, seed: int = 0, min_seconds: float = 0.3, max_seconds: float = 2.5
) -> Path:
    """``count`` utterances of random length (harmonic tones plus noise); returns the manifest path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utterances = []
    for number in range(count):
        seconds = float(rng.uniform(min_seconds, max_seconds))
        samples = int(seconds * 16000)
        t = np.arange(samples) / 16000
        base = rng.uniform(100, 400)
        signal = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        signal = 0.2 * signal / np.abs(signal).max() + rng.normal(0, 0.01, samples)
        path = folder / f"utt{number:03d}.wav"
        soundfile.write(str(path), signal.astype(np.float32), 16000, subtype="PCM_16")
        utterances.append(
            Utterance(
                f"utt{number:03d}", path.name, samples / 16000, 16000, f"tone {number}", f"intent{number % 3}"
            )
        )
    return write_manifest(folder / "data.jsonl", utterances)
