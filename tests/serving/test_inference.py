"""pipeline.serving.inference and `slukd predict`: real audio of several formats and rates, bad inputs."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import soundfile
from inference_fixtures import tiny_model, write_variant

from pipeline.cli import main as cli
from pipeline.data.audio import AudioError, load_audio
from pipeline.data.labels import LabelSet
from pipeline.serving.inference import (
    IntentRecognizer,
    expand_inputs,
    greedy_ctc,
    intent_slots,
)
from pipeline.serving.model_dir import ModelDirError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.getbasetemp() / "inference_model")


@pytest.fixture(scope="module")
def recognizer(model):
    return IntentRecognizer.from_pretrained(model.model_dir)


@pytest.fixture(scope="module")
def variants(model, tmp_path_factory):
    """The same real recording as wav 8 kHz stereo, flac 44.1 kHz, ogg 22.05 kHz and mp3 48 kHz."""
    folder = tmp_path_factory.mktemp("variants")
    source = model.test_files[0]
    return {
        "wav": source,
        "wav8k_stereo": write_variant(source, folder / "a_8k_stereo.wav", 8000, channels=2),
        "flac": write_variant(source, folder / "b_44k.flac", 44100),
        "ogg": write_variant(source, folder / "c_22k.ogg", 22050, subtype="VORBIS"),
        "mp3": write_variant(source, folder / "d_48k.mp3", 48000, subtype="MPEG_LAYER_III"),
    }


def run_cli(capsys, *args) -> tuple[int, list[dict], list[str]]:
    """``slukd ARGS``: exit status, the JSON lines on stdout, the ERROR lines on stderr."""
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return code, lines, [line for line in captured.err.splitlines() if " ERROR " in line]


def test_files_of_every_format_and_rate(recognizer, variants):
    results = recognizer.predict(list(variants.values()), top_k=3)
    duration = soundfile.info(str(variants["wav"])).duration
    for name, result in zip(variants, results, strict=True):
        assert result.source == str(variants[name])
        assert result.duration == pytest.approx(duration, abs=0.06), name  # mp3 adds codec padding
        assert result.intent in recognizer.labels and len(result.top_k) == 3
        # the model has slot heads: the intent is decoded with the slots, its confidence is its probability
        assert result.confidence == dict(result.top_k).get(result.intent, result.confidence)
        assert set(result.slot_confidence) == {"action", "object", "location"}
        assert 0 < result.command_confidence <= result.confidence
        assert [p for _, p in result.top_k] == sorted((p for _, p in result.top_k), reverse=True)
        assert isinstance(result.transcript, str)  # the model has a CTC head
    # 16 kHz -> 44.1 kHz -> 16 kHz is nearly lossless, so the prediction barely moves
    assert results[2].intent == results[0].intent
    assert results[2].confidence == pytest.approx(results[0].confidence, abs=0.02)


def test_arrays_batches_and_file_agree(recognizer, model):
    files = model.test_files[:6]
    by_file = recognizer.predict(files, batch_size=4)
    one_at_a_time = recognizer.predict(files, batch_size=1)
    waveforms = [load_audio(path) for path in files]
    by_array = recognizer.predict(waveforms, sample_rate=16000, batch_size=6)
    import torch

    stereo_tensor = torch.from_numpy(np.stack([waveforms[0], waveforms[0]]))
    [from_tensor] = recognizer.predict(stereo_tensor, sample_rate=16000)
    for a, b, c in zip(by_file, one_at_a_time, by_array, strict=True):
        assert a.intent == b.intent == c.intent
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert a.confidence == pytest.approx(c.confidence, abs=1e-6)
    assert from_tensor.confidence == pytest.approx(by_file[0].confidence, abs=1e-6)
    assert by_array[0].source == "array[0]"
    with pytest.raises(AudioError, match="needs its sample_rate"):
        recognizer.predict(waveforms[0])


def test_threshold_gives_unknown(recognizer, model):
    plain = recognizer.predict(model.test_files[:8])
    # a bare number is a threshold on the max-softmax probability (the top of top_k)
    confidences = sorted(result.top_k[0][1] for result in plain)
    assert confidences[0] < confidences[-1]
    threshold = (confidences[0] + confidences[-1]) / 2
    gated = recognizer.predict(model.test_files[:8], threshold=threshold)
    for before, after in zip(plain, gated, strict=True):
        if before.top_k[0][1] < threshold:
            assert after.intent == "unknown" and after.slots == {}
        else:
            assert after.intent == before.intent and after.slots == before.slots
        assert after.top_k == before.top_k
    assert any(r.intent == "unknown" for r in gated) and any(r.intent != "unknown" for r in gated)


def test_slots_and_ctc_decoding():
    labels = LabelSet(
        ["change language_Chinese_none", "activate_lights_kitchen", "odd"],
        {"action": ["change language", "activate"], "location": ["none", "kitchen"],
         "object": ["Chinese", "lights"]},
    )  # fmt: skip
    assert intent_slots("change language_Chinese_none", labels) == {
        "action": "change language", "object": "Chinese", "location": "none"
    }  # fmt: skip
    assert intent_slots("odd", labels) == {}
    assert intent_slots("unknown", labels) == {}
    assert intent_slots("activate_lights_kitchen", LabelSet(["activate_lights_kitchen", "b"])) == {}
    scores = np.log(np.eye(4)[[0, 1, 1, 0, 1, 2, 2, 3, 0]] + 1e-6)  # blank a a blank a b b c blank
    assert greedy_ctc(scores, "abc") == "aabc"


def test_cli_answers_every_file_and_reports_the_bad_ones(capsys, model, variants, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file" * 10)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, np.float32), 16000)
    missing = tmp_path / "missing.flac"
    good = [variants["wav8k_stereo"], variants["flac"], variants["ogg"]]
    code, lines, errors = run_cli(
        capsys, "predict", "--model", model.model_dir, "--top-k", "2", good[0], broken, good[1], missing, empty,
        good[2],
    )  # fmt: skip
    assert code == 1
    assert [line["file"] for line in lines] == [
        str(p) for p in [good[0], broken, good[1], missing, empty, good[2]]
    ]
    for line in (lines[0], lines[2], lines[5]):
        assert set(line) == {"file", "intent", "confidence", "top_k", "slots", "duration", "transcript",
                             "slot_confidence", "command_confidence"}  # fmt: skip
        assert len(line["top_k"]) == 2
        # slots with a value, those the printed intent fixes (joint decoding)
        fixed = dict(zip(("action", "object", "location"), line["intent"].split("_"), strict=True))
        assert line["slots"] == {name: value for name, value in fixed.items() if value != "none"}
    assert "cannot read audio" in lines[1]["error"] and str(broken) in lines[1]["error"]
    assert "not found" in lines[3]["error"] and str(missing) in lines[3]["error"]
    assert "empty" in lines[4]["error"] and str(empty) in lines[4]["error"]
    assert sum(str(broken) in error for error in errors) == 1 and any("3 of 6" in error for error in errors)


def test_directory_list_and_stdin_inputs(capsys, model, variants, tmp_path, monkeypatch):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    write_variant(variants["wav"], folder / "sub" / "z.wav", 16000)
    write_variant(variants["wav"], folder / "a.flac", 16000)
    (folder / "notes.txt").write_text("not audio")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# files\n{variants['ogg']}\n\n{variants['flac']}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{variants['wav8k_stereo']}\n"))
    code, lines, _ = run_cli(capsys, "predict", "--model", model.model_dir, folder, f"@{listing}", "-")
    assert code == 0
    assert [line["file"] for line in lines] == [
        str(folder / "a.flac"), str(folder / "sub" / "z.wav"), str(variants["ogg"]), str(variants["flac"]),
        str(variants["wav8k_stereo"]),
    ]  # fmt: skip
    assert all("intent" in line for line in lines)
    code, lines, _ = run_cli(capsys, "predict", "--model", model.model_dir, "--list", listing)
    assert code == 0 and len(lines) == 2
    [(name, problem)] = expand_inputs([f"@{tmp_path / 'nowhere.txt'}"])
    assert "cannot read the list file" in problem
    (tmp_path / "blank").mkdir()
    [(name, problem)] = expand_inputs([str(tmp_path / "blank")])
    assert "no audio files" in problem


def test_too_long_audio_is_refused_before_decoding(capsys, model, recognizer, tmp_path):
    speech = load_audio(model.test_files[0])
    limit = np.ceil((len(speech) / 16000 + 0.2) * 10) / 10  # the short file fits, the long one does not
    long_file = tmp_path / "long.wav"
    repeats = int(np.ceil((limit + 0.5) * 16000 / len(speech)))
    soundfile.write(str(long_file), np.tile(speech, repeats), 16000)
    code, lines, _ = run_cli(
        capsys,
        "predict",
        "--model",
        model.model_dir,
        "--max-seconds",
        f"{limit:g}",
        long_file,
        model.test_files[0],
    )
    assert code == 1
    assert (
        lines[0]["error"]
        == f"{long_file}: audio is {len(speech) * repeats / 16000:.1f} s, longer than the {limit:g} s limit"
    )
    assert "intent" in lines[1]
    strict = IntentRecognizer.from_pretrained(model.model_dir, max_seconds=1.0)
    with pytest.raises(AudioError, match=r"array\[0\]: audio is 3\.0 s, longer than the 1 s limit"):
        strict.predict(np.zeros(48000, np.float32), sample_rate=16000)
    with pytest.raises(AudioError, match="empty"):
        recognizer.predict(np.zeros(0, np.float32), sample_rate=8000)
    # 60 s (the default limit) is answered, in bounded memory
    [result] = recognizer.predict(np.tile(speech, int(np.ceil(59 * 16000 / len(speech))))[: 59 * 16000],
                                  sample_rate=16000)  # fmt: skip
    assert result.duration == pytest.approx(59.0)


def copy_model(source, target):
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def test_bad_model_dirs(capsys, model, tmp_path):
    missing = copy_model(model.model_dir, tmp_path / "missing")
    (missing / "model.safetensors").unlink()
    newer = copy_model(model.model_dir, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "version": 99}))
    other = copy_model(model.model_dir, tmp_path / "other")
    (other / "config.json").write_text(json.dumps({**config, "format": "something-else"}))
    reshaped = copy_model(model.model_dir, tmp_path / "reshaped")
    (reshaped / "config.json").write_text(
        json.dumps({**config, "student": {**config["student"], "d_model": 48}})
    )
    broken = copy_model(model.model_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    cases = {
        missing: "model.safetensors is missing",
        newer: "model version 99 is newer than this slukd reads",
        other: "format 'something-else' is not 'slukd-student'",
        reshaped: "model.safetensors: weights do not fit config.json",
        broken: "config.json: not valid JSON",
        tmp_path / "nowhere": "model dir not found",
    }
    for folder, message in cases.items():
        with pytest.raises(ModelDirError, match=message):
            IntentRecognizer.from_pretrained(folder)
        code, lines, errors = run_cli(capsys, "predict", "--model", folder, model.test_files[0])
        assert code == 1 and lines == [] and len(errors) == 1, errors
        assert message in errors[0] and str(folder) in errors[0]
