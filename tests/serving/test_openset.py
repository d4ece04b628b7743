"""Saying "unknown" with a real tiny model: calibration on valid, each reason, predict and
IntentRecognizer agreeing, trimming as trained, segments of a long recording, the ONNX metadata."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
from inference_fixtures import tiny_model

from pipeline.cli import main as cli
from pipeline.data.audio import SAMPLE_RATE, load_audio
from pipeline.data.batching import WaveformDataset
from pipeline.data.manifest import read_manifest
from pipeline.serving.calibrate import calibrate
from pipeline.serving.export import export_model
from pipeline.serving.inference import IntentRecognizer
from pipeline.serving.rejection import LOW_CONFIDENCE, NO_SPEECH, NOT_A_COMMAND, RejectionError, screen
from tests.openset_fixtures import at_level, hum, long_recording, noise


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.getbasetemp() / "inference_model")


@pytest.fixture(scope="module")
def calibrated(model, tmp_path_factory):
    """A copy of the tiny model with its rejection calibrated on valid for 75% acceptance."""
    folder = tmp_path_factory.mktemp("calibrated") / "student"
    shutil.copytree(model.model_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    assert cli.main(["calibrate", "--model", str(folder), "--data", str(model.data), "--target", "0.75"]) == 0
    return folder


@pytest.fixture(scope="module")
def non_speech_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("non_speech")
    rng = np.random.default_rng(0)
    signals = {
        "silence": at_level(noise(2 * SAMPLE_RATE, "white", rng), -65),
        "pink": at_level(noise(2 * SAMPLE_RATE, "pink", rng), -30),
        "hum": at_level(hum(2 * SAMPLE_RATE, 60), -25),
    }
    paths = {}
    for name, signal in signals.items():
        paths[name] = folder / f"{name}.wav"
        soundfile.write(str(paths[name]), signal, SAMPLE_RATE)
    return paths


class CountingBackend:
    """The real backend, counting the inputs it is asked to run."""

    def __init__(self, backend) -> None:
        self.backend, self.inputs = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __call__(self, waveforms, lengths):
        self.inputs += len(lengths)
        return self.backend(waveforms, lengths)


def run_cli(capsys, *args) -> tuple[int, list[dict]]:
    code = cli.main([str(arg) for arg in args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_calibration_accepts_exactly_the_target_on_valid(model, calibrated):
    section = json.loads((calibrated / "config.json").read_text())["rejection"]
    valid = read_manifest(model.data / "manifests" / "valid.jsonl")
    files = [valid.audio_path(u) for u in valid]
    assert section["method"] == "energy" and section["target_acceptance"] == 0.75  # the measured default
    assert section["calibration"]["utterances"] == len(files) == 16
    recognizer = IntentRecognizer.from_pretrained(calibrated)
    answers = recognizer.predict(files)  # threshold "auto": the calibrated one
    accepted = sum(answer.intent != "unknown" for answer in answers)
    assert accepted == 12 == round(section["calibration"]["acceptance"] * 16)  # ceil(0.75 * 16)
    assert {answer.reason for answer in answers if answer.intent == "unknown"} == {LOW_CONFIDENCE}
    # the plain model (no rejection section) answers every file with an intent, as before
    assert all(
        a.intent != "unknown" and a.reason is None
        for a in IntentRecognizer.from_pretrained(model.model_dir).predict(files)
    )
    with pytest.raises(RejectionError, match="needs an 'unknown' intent"):
        calibrate(calibrated, model.data, method="unknown")
    assert (
        cli.main(["calibrate", "--model", str(calibrated), "--data", str(model.data), "--split", "test"]) == 2
    )


def test_calibration_in_noise_keeps_the_target_over_clean_and_noisy_copies(model, tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(model.model_dir, folder, ignore=shutil.ignore_patterns("checkpoints"))
    clean = calibrate(folder, model.data, target_acceptance=0.75)
    noisy = calibrate(
        folder, model.data, target_acceptance=0.75, noise_types=("household", "white"), snrs=(12.0, 0.0)
    )
    conditions = noisy.calibration["conditions"]
    assert list(conditions) == [
        "clean",
        "household_12dB_peak",
        "household_0dB_peak",
        "white_12dB_peak",
        "white_0dB_peak",
    ]
    assert np.mean(list(conditions.values())) == pytest.approx(noisy.calibration["acceptance"])
    assert noisy.calibration["acceptance"] >= 0.75 and noisy.calibration["utterances"] == 16
    assert clean.calibration["conditions"] == {"clean": clean.calibration["acceptance"]}
    # the copies are what the evaluation sweep hears (seeded per utterance): rerunning gives the same threshold
    assert calibrate(folder, model.data, target_acceptance=0.75, noise_types=("household", "white"),
                     snrs=(12.0, 0.0)).threshold == noisy.threshold  # fmt: skip
    assert (
        cli.main(["calibrate", "--model", str(folder), "--data", str(model.data), "--noise-types", "brown"])
        == 2
    )


def test_no_speech_never_runs_the_model(calibrated, model, non_speech_files):
    recognizer = IntentRecognizer.from_pretrained(calibrated)
    counting = recognizer.backend = CountingBackend(recognizer.backend)
    answers = recognizer.predict(list(non_speech_files.values()))
    assert [(a.intent, a.reason, a.top_k, a.slots) for a in answers] == [("unknown", NO_SPEECH, [], {})] * 3
    assert answers[0].duration == pytest.approx(2.0) and counting.inputs == 0
    [speech] = recognizer.predict(model.test_files[0], threshold=0.0)  # speech runs the model
    assert speech.intent != "unknown" and counting.inputs == 1
    # no rejection asked for: silence gets an intent, as before rejection existed
    [forced] = recognizer.predict(non_speech_files["hum"], threshold=None)
    assert forced.intent != "unknown" and forced.reason is None


def test_each_reason_through_predict_and_the_recognizer(
    capsys, calibrated, model, non_speech_files, tmp_path
):
    # relabel the class the model gives the first test file as "unknown": the model now knows it
    # as a not-a-command class, with the same weights
    relabelled = tmp_path / "with_unknown"
    shutil.copytree(calibrated, relabelled)
    recognizer = IntentRecognizer.from_pretrained(calibrated)
    winner = recognizer.predict(model.test_files[0], threshold=None)[0].intent
    config = json.loads((relabelled / "config.json").read_text())
    config["labels"]["intents"] = ["unknown" if i == winner else i for i in config["labels"]["intents"]]
    (relabelled / "config.json").write_text(json.dumps(config))
    unknown_aware = IntentRecognizer.from_pretrained(relabelled)
    files = [non_speech_files["pink"], model.test_files[0], *model.test_files[1:6]]
    expected = unknown_aware.predict(
        files, top_k=2, threshold=1e9
    )  # above any energy score (the stored method)
    reasons = [answer.reason for answer in expected]
    assert reasons[0] == NO_SPEECH and reasons[1] == NOT_A_COMMAND and LOW_CONFIDENCE in reasons[2:]
    code, lines = run_cli(
        capsys, "predict", "--model", relabelled, "--top-k", "2", "--threshold", "1e9", *files
    )
    assert code == 0
    assert lines == [{"file": str(f), **answer.to_dict()} for f, answer in zip(files, expected, strict=True)]
    for line in lines:
        assert line["intent"] == "unknown" and line["reason"] in (NO_SPEECH, NOT_A_COMMAND, LOW_CONFIDENCE)
    # "auto" (the default) is the calibrated threshold, on the command line as in the recognizer
    code, lines = run_cli(capsys, "predict", "--model", calibrated, *files)
    assert lines == [
        {"file": str(f), **a.to_dict()} for f, a in zip(files, recognizer.predict(files), strict=True)
    ]
    assert run_cli(capsys, "predict", "--model", calibrated, "--threshold", "high", files[0])[0] == 2


def test_trimming_is_what_training_did(model, calibrated):
    config = json.loads((model.model_dir / "config.json").read_text())
    assert config["trim_silence"] is True  # new models: on
    recognizer = IntentRecognizer.from_pretrained(calibrated)
    assert recognizer.trim_silence
    manifest = read_manifest(model.data / "manifests" / "test.jsonl")
    dataset = WaveformDataset(manifest, trim_silence=True)  # what training and evaluation read
    untrimmed = IntentRecognizer.from_pretrained(calibrated)
    untrimmed.trim_silence = False
    for index in range(3):
        padded = np.concatenate(
            [np.zeros(8000, np.float32), load_audio(model.test_files[index]), np.zeros(12000, np.float32)]
        )
        trimmed, found = screen(load_audio(model.test_files[index]), SAMPLE_RATE, True, None)
        assert found and np.array_equal(trimmed, dataset[index].waveform.numpy())
        # silence around a command is cut before the model sees it (what is left: the margins)
        cut, _ = screen(padded, SAMPLE_RATE, True, None)
        assert (
            len(cut) <= len(load_audio(model.test_files[index])) + 2 * (0.1 + 0.025) * SAMPLE_RATE
        )  # + a window
        [longer] = recognizer.predict(padded, sample_rate=SAMPLE_RATE, threshold=None)
        [by_hand] = untrimmed.predict(cut, sample_rate=SAMPLE_RATE, threshold=None)
        assert (longer.intent, longer.duration) == (by_hand.intent, len(padded) / SAMPLE_RATE)
        assert longer.confidence == pytest.approx(by_hand.confidence, abs=1e-6)
    # a dir from before trimming existed loads without it, and nothing is cut
    old = calibrated.parent / "old"
    shutil.copytree(model.model_dir, old, ignore=shutil.ignore_patterns("checkpoints"))
    del config["trim_silence"]
    (old / "config.json").write_text(json.dumps(config))
    assert not IntentRecognizer.from_pretrained(old).trim_silence


def test_segments_of_a_long_recording(capsys, calibrated, tmp_path):
    pieces = [("", 1.0), ("turn on the lights", 0), ("", 2.0), ("stop the music", 0), ("", 1.5),
              ("bring me my shoes", 0), ("", 1.0)]  # fmt: skip
    signal, truth = long_recording(pieces, -55, np.random.default_rng(5))
    path = tmp_path / "long.wav"
    soundfile.write(str(path), signal, SAMPLE_RATE)
    recognizer = IntentRecognizer.from_pretrained(calibrated, max_seconds=3.0)
    segments = recognizer.predict_segments(path, threshold=None)
    assert len(segments) == len(truth)
    for segment, (start, end) in zip(segments, truth, strict=True):
        assert (
            segment.start <= start + 0.08 and segment.end >= end - 0.08 and segment.end - segment.start <= 3.0
        )
        assert segment.intent != "unknown" and segment.duration == pytest.approx(
            segment.end - segment.start, abs=0.01
        )
    code, lines = run_cli(
        capsys,
        "predict",
        "--model",
        calibrated,
        "--max-seconds",
        "3",
        "--segment",
        "--threshold",
        "none",
        path,
    )
    assert code == 0
    assert lines == [{"file": str(path), **segment.to_dict()} for segment in segments]
    assert list(lines[0])[:4] == ["file", "start", "end", "intent"]
    # without --segment a recording longer than the window is refused, as before
    code, lines = run_cli(capsys, "predict", "--model", calibrated, "--max-seconds", "3", path)
    assert code == 1 and "longer than the 3 s limit" in lines[0]["error"]
    # a recording without speech: one line, "no speech", for all of it
    quiet = tmp_path / "quiet.wav"
    soundfile.write(
        str(quiet), at_level(noise(5 * SAMPLE_RATE, "brown", np.random.default_rng(6)), -40), SAMPLE_RATE
    )
    [line] = run_cli(capsys, "predict", "--model", calibrated, "--segment", quiet)[1]
    assert (line["intent"], line["reason"], line["start"], line["end"]) == ("unknown", NO_SPEECH, 0.0, 5.0)


def test_rejection_travels_in_the_onnx_metadata(calibrated, model, non_speech_files, tmp_path):
    import onnx

    result = export_model(calibrated, tmp_path / "model.onnx")
    metadata = {entry.key: entry.value for entry in onnx.load(str(result.onnx_path)).metadata_props}
    config = json.loads((calibrated / "config.json").read_text())
    assert (
        json.loads(metadata["slukd_rejection"]) == config["rejection"] and metadata["trim_silence"] == "true"
    )
    exported = IntentRecognizer.from_pretrained(result.onnx_path)
    reference = IntentRecognizer.from_pretrained(calibrated)
    assert exported.rejection == reference.rejection and exported.trim_silence
    files = [non_speech_files["silence"], *model.test_files[:6]]
    for a, b in zip(exported.predict(files), reference.predict(files), strict=True):
        assert (a.intent, a.reason) == (b.intent, b.reason)
    plain = export_model(model.model_dir, tmp_path / "plain.onnx")  # no rejection stored: none exported
    assert IntentRecognizer.from_pretrained(plain.onnx_path).rejection is None


def test_a_recording_too_long_to_decode_is_refused(capsys, calibrated, tmp_path, monkeypatch):
    from pipeline.serving import segments

    path = tmp_path / "hour.wav"
    soundfile.write(str(path), np.zeros(4 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    monkeypatch.setattr(
        segments, "MAX_RECORDING_SECONDS", 3.0
    )  # stands for the hour, checked from the header
    code, lines = run_cli(capsys, "predict", "--model", calibrated, "--segment", path)
    assert code == 1 and lines == [
        {"file": str(path), "error": f"{path}: audio is 4 s, longer than the 3 s a recording may be"}
    ]
