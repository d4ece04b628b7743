"""pipeline.serving.model_dir: the one reader and writer of student model dirs (v2, and v1 dirs still load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.core.config import to_dict
from pipeline.data.labels import LabelSet
from pipeline.frontends.base import FbankFrontEnd
from pipeline.serving.model_dir import ModelDirError, is_student_dir, load_model_dir, save_model_dir
from pipeline.students.registry import build_student

TINY = {
    "d_model": 32,
    "num_layers": 2,
    "num_heads": 2,
    "feedforward": 64,
    "conv_channels": 8,
    "num_intents": 3,
}
LABELS = LabelSet(["a", "b", "c"])


def frontend() -> FbankFrontEnd:
    return FbankFrontEnd().with_statistics({"mean": [7.0] * 80, "std": [2.0] * 80})


def logits(model, seed: int = 0) -> torch.Tensor:
    features = torch.randn(2, 60, 80, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(features, torch.tensor([60, 40])).logits


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_student("transformer", {**TINY, "ctc_vocab_size": 38})
    save_model_dir(tmp_path / "m", model, frontend(), LABELS, {"ctc_characters": "xyz"}, {"accuracy": 0.5})
    assert is_student_dir(tmp_path / "m") and not is_student_dir(tmp_path)
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.family == "transformer" and loaded.labels == LABELS and loaded.ctc_characters == "xyz"
    assert loaded.config["version"] == 2 and loaded.frontend.to_config() == frontend().to_config()
    assert torch.equal(logits(loaded.model), logits(model))
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"accuracy": 0.5}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "labels.json", "metrics.json", "model.safetensors"
    ]  # fmt: skip


def test_version_1_dirs_still_load(tmp_path):
    """A dir as slukd wrote it before model_dir.py: fbank ``features`` + ``cmvn``, no family."""
    torch.manual_seed(1)
    model = build_student("transformer", TINY)
    folder = tmp_path / "v1"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "format": "slukd-student", "version": 1, "student": to_dict(model.config),
        "features": to_dict(frontend().config), "cmvn": {"mean": [7.0] * 80, "std": [2.0] * 80},
        "labels": LABELS.to_dict(), "ctc_characters": None, "training": {},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model_dir(folder)
    assert loaded.family == "transformer" and loaded.config["version"] == 2
    np.testing.assert_array_equal(loaded.frontend.mean, np.full(80, 7.0, np.float32))
    assert torch.equal(logits(loaded.model), logits(model)) and loaded.ctc_characters is None


def test_bad_dirs_are_one_line_errors(tmp_path):
    model = build_student("transformer", TINY)
    save_model_dir(tmp_path / "good", model, frontend(), LABELS)
    config = json.loads((tmp_path / "good" / "config.json").read_text())

    def broken(name: str, **changes) -> object:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").write_bytes((tmp_path / "good" / "model.safetensors").read_bytes())
        (folder / "config.json").write_text(
            json.dumps({k: v for k, v in {**config, **changes}.items() if v != "-"})
        )
        return folder

    cases = {
        broken("family", family="conformer"): "unknown student family 'conformer'",
        broken("labels", labels={"intents": ["a", "b"]}): "student has 3 intents but the labels list 2",
        broken("stats", frontend={**config["frontend"], "cmvn": None}): "fbank front-end has no statistics",
        broken("frontend", frontend="-"): "no 'frontend' entry",
        broken("shape", student={**config["student"], "d_model": 64}): "weights do not fit config.json",
    }
    for folder, message in cases.items():
        with pytest.raises(ModelDirError, match=message) as error:
            load_model_dir(folder)
        assert str(folder) in error.value.one_line() and "\n" not in error.value.one_line()
    with pytest.raises(ModelDirError, match="no statistics to save"):
        save_model_dir(tmp_path / "nostats", model, FbankFrontEnd(), LABELS)


FRESH_PROCESS_LOAD = """
import sys, torch
from pipeline.serving.model_dir import load_model_dir
for folder in sys.argv[1:]:
    loaded = load_model_dir(folder)
    expected = torch.load(f"{folder}/expected.pt")
    features, frames = loaded.frontend(expected["waveforms"], expected["lengths"])
    with torch.no_grad():
        logits = loaded.model(features, frames).logits
    torch.testing.assert_close(logits, expected["logits"])
    print(loaded.family, loaded.frontend.name)
"""


def test_pretrained_family_dirs_load_in_a_fresh_process(tmp_path):
    """The bug this guards against: load_model_dir built the front-end before anything had
    imported the module that registers it ("unknown front-end 'waveform'; known: fbank")."""
    import subprocess
    import sys
    from pathlib import Path

    transformers = pytest.importorskip("transformers")
    tiny_wav2vec2 = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    tiny_whisper = {"num_mel_bins": 8, "d_model": 16, "encoder_layers": 1, "num_heads": 2, "ffn_dim": 32,
                    "max_positions": 50}  # fmt: skip
    students = {
        "hf": {"hf_config": tiny_wav2vec2.to_dict(), "num_intents": 3},
        "whisper": {**tiny_whisper, "num_intents": 3},
    }
    torch.manual_seed(0)
    waveforms, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    folders = []
    for family, values in students.items():
        from pipeline.frontends.base import build_frontend

        model = build_student(family, values).eval()
        front = build_frontend(model.default_frontend())
        save_model_dir(tmp_path / family, model, front, LABELS)
        with torch.no_grad():
            expected = model(*front(waveforms, lengths)).logits
        torch.save(
            {"waveforms": waveforms, "lengths": lengths, "logits": expected},
            tmp_path / family / "expected.pt",
        )
        folders.append(str(tmp_path / family))
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_LOAD, *folders], capture_output=True, text=True, timeout=300,
        cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["hf waveform", "whisper whisper_logmel"]
