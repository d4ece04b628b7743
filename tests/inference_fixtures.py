"""A tiny real model for the inference and export tests: espeak corpus, a CTC head, 30 short
epochs (about 10 s; fewer leave the logits so close that int8 flips most argmaxes).

Built once per test session (both test files share it), in the session's temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from data_prep.synthetic.generate import SyntheticConfig, prepare_synthetic
from pipeline.data.audio import load_audio
from pipeline.data.manifest import read_manifest
from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store
from pipeline.training.train import TrainInputs, load_experiment_config, train_student

TINY_MODEL = [
    "student.d_model=32", "student.num_layers=2", "student.num_heads=2", "student.feedforward=64",
    "student.conv_channels=8", "train.max_frames=4000", "train.warmup_steps=3", "train.learning_rate=0.003",
    "train.epochs=30", "train.patience=0", "train.device=cpu", "distill.ctc=0.3",
]  # fmt: skip


@dataclass
class TinyModel:
    data: Path  # the corpus folder (manifests/)
    model_dir: Path  # a trained student model dir with a CTC head
    test_files: list[Path]  # real 16 kHz mono wav files
    test_intents: list[str]


_BUILT: dict[Path, TinyModel] = {}


def tiny_model(root: Path) -> TinyModel:
    """The corpus and model under ``root`` (built on the first call, reused afterwards)."""
    if root not in _BUILT:
        data = root / "tiny"
        prepare_synthetic(data, SyntheticConfig(size="tiny", seed=0, engines=["espeak"]))
        options = ExtractionOptions(device="cpu", num_workers=0)
        for split in ("train", "valid"):
            compute_feature_store(
                data / "manifests" / f"{split}.jsonl", data / "fbank" / split, options=options
            )
        inputs = TrainInputs(
            train_manifest=data / "manifests/train.jsonl", valid_manifest=data / "manifests/valid.jsonl",
            train_features=data / "fbank/train", valid_features=data / "fbank/valid",
        )  # fmt: skip
        train_student(inputs, root / "student", load_experiment_config(None, TINY_MODEL))
        manifest = read_manifest(data / "manifests/test.jsonl")
        utterances = list(manifest)
        _BUILT[root] = TinyModel(
            data,
            root / "student",
            [manifest.audio_path(u) for u in utterances],
            [u.intent for u in utterances],
        )
    return _BUILT[root]


def write_variant(source: Path, target: Path, sample_rate: int, channels: int = 1, **options) -> Path:
    """Re-encode a real recording at another rate / channel count / format (from the suffix)."""
    from pipeline.data.audio import resample

    samples = resample(load_audio(source), 16000, sample_rate)
    if channels > 1:
        samples = np.stack([samples] + [0.8 * samples] * (channels - 1), axis=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(target), samples, sample_rate, **options)
    return target
