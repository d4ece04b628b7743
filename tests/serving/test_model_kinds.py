"""pipeline.serving.model_kinds: kinds recognised by config.json, a new kind added by registration, one-line errors;
pipeline.core.timing: the timing helpers."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.core.timing import measure_on_devices, time_passes, torch_threads
from pipeline.data.labels import LabelSet
from pipeline.serving import model_kinds
from pipeline.serving.model_kinds import (
    MODEL_KINDS,
    TEXT,
    WAVEFORM,
    LoadedModel,
    ModelKind,
    ModelKindError,
    load_model,
    model_kind,
    register_model_kind,
)


def write_config(folder, config) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


def test_student_and_teacher_configs_are_recognised(tmp_path):
    write_config(tmp_path / "student", {"format": "slukd-student", "version": 2})
    write_config(tmp_path / "teacher", {"model_type": "bert", "slukd_teacher": {"version": 1}})
    assert model_kind(tmp_path / "student") == "student" and MODEL_KINDS["student"].input == WAVEFORM
    assert model_kind(tmp_path / "teacher") == "teacher" and MODEL_KINDS["teacher"].input == TEXT


def test_a_new_kind_is_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(model_kinds, "MODEL_KINDS", dict(MODEL_KINDS))  # the registration ends with the test
    labels = LabelSet(["on", "off"])
    module = torch.nn.Linear(3, 2)

    def load(folder, device):
        return LoadedModel("echo", labels, {}, TEXT, module, device,
                           text_logits=lambda texts: torch.zeros(len(texts), 2).numpy())  # fmt: skip

    register_model_kind(ModelKind("echo", TEXT, lambda config: config.get("format") == "echo", load))
    write_config(tmp_path / "echo", {"format": "echo"})
    assert model_kind(tmp_path / "echo") == "echo" and "echo" not in MODEL_KINDS
    loaded = load_model(tmp_path / "echo", torch.device("cpu"))
    assert loaded.kind == "echo" and loaded.num_parameters() == 3 * 2 + 2
    assert loaded.text_logits(["a", "b"]).shape == (2, 2)


def test_folders_of_no_known_kind_are_one_line_errors(tmp_path):
    with pytest.raises(ModelKindError, match="no config.json"):
        model_kind(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelKindError, match="not valid JSON"):
        model_kind(tmp_path)
    write_config(tmp_path, {"format": "something-else"})
    with pytest.raises(ModelKindError, match=r"none of the model kinds slukd evaluates \(student, teacher"):
        model_kind(tmp_path)


def test_time_passes_and_thread_pinning():
    calls: list[int] = []
    timing = time_passes(calls.append, lambda: calls.append(-1), items=4, batch_size=8,
                         device=torch.device("cpu"), warmup=2, repeats=3)  # fmt: skip
    assert calls == [0, 1, 0, 1, 2, 3, -1, -1, -1, -1]  # warm-up, timed items, untimed + timed batches
    assert len(timing["latencies"]) == 4 and timing["latency_ms"] >= 0 and timing["throughput_batch"] == 8
    threads = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    seen: list[int] = []
    result = measure_on_devices(
        lambda device: seen.append(torch.get_num_threads()) or {"throughput_utterances_per_second": 1.0}
    )
    assert (
        seen[0] == 1
        and result["cpu"]["latency_threads"] == 1
        and result["cpu"]["throughput_threads"] == threads
    )
