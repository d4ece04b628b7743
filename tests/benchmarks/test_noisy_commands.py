"""benchmarks/noisy_commands.py: whole commands in noise mixed on the loudest frame, scored through
prediction's own path; the outcomes add up and match IntentRecognizer on the same audio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from inference_fixtures import tiny_model

from pipeline.augment.conditions import BabbleBank, NoiseCondition, noisy_waveforms
from pipeline.data.manifest import Utterance, read_manifest
from pipeline.serving.inference import IntentRecognizer, Prediction

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import noisy_commands  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.getbasetemp() / "inference_model")


def test_outcomes_of_a_prediction():
    utterance = Utterance(
        id="u", audio="u.wav", duration=1.0, sample_rate=16000, transcript="t", intent="order",
        slots={"size": "large", "crust": "none"},
    )  # fmt: skip

    def answer(intent, slots, reason=None):
        return Prediction(intent, 0.9, [], slots, 1.0, reason=reason)

    assert noisy_commands.outcome(answer("order", {"size": "large"}), utterance) == "right"
    assert noisy_commands.outcome(answer("order", {"size": "small"}), utterance) == "wrong"
    assert noisy_commands.outcome(answer("order", {"size": "large", "crust": "thin"}), utterance) == "wrong"
    assert noisy_commands.outcome(answer("unknown", {}, "no speech"), utterance) == "no speech"
    assert noisy_commands.outcome(answer("unknown", {}, "low confidence"), utterance) == "rejected"


def test_the_table_counts_every_utterance_as_predict_answers_it(model, tmp_path, capsys):
    out = tmp_path / "table.md"
    code = noisy_commands.main([
        "--models", str(model.model_dir), "--data", str(model.data / "manifests"), "--split", "test",
        "--noises", "household,babble", "--snrs", "12", "--utterances", "5", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    table = out.read_text()
    assert table == capsys.readouterr().out.strip("\n") + "\n"
    rows = [line for line in table.splitlines() if line.startswith(f"| {model.model_dir} |")]
    assert [row.split(" | ")[1] for row in rows] == [
        "clean", "household_12dB_peak", "babble_12dB_peak", "mean of the noisy cells"
    ]  # fmt: skip
    # the household cell again, by hand, through IntentRecognizer
    manifest = noisy_commands.subset(read_manifest(model.data / "manifests" / "test.jsonl"), 5, 0)
    ids, clean, lengths = noisy_commands.padded_clips(manifest, 0.5)
    expected = torch.tensor([u.duration * 16000 + 16000 for u in manifest])
    assert (lengths - expected).abs().max() <= 2  # half a second of silence either side
    bank = BabbleBank(read_manifest(model.data / "manifests" / "valid.jsonl"), 32, 0)
    noisy = noisy_waveforms(clean, lengths, ids, NoiseCondition("household", 12.0, reference="peak"), 0, bank)
    recognizer = IntentRecognizer.from_pretrained(model.model_dir)
    counts = noisy_commands.score(recognizer, manifest, ids, noisy, lengths, "auto")
    assert sum(counts.values()) == 5
    right = f"| {100 * counts['right'] / 5:.1f} ["
    assert right in rows[1]


def test_a_missing_split_is_one_line(model, tmp_path, capsys):
    code = noisy_commands.main(["--models", str(model.model_dir), "--data", str(tmp_path), "--split", "test"])
    assert code == 1
    assert "test.jsonl" in capsys.readouterr().err


def test_a_crowd_babble_from_another_manifests_speech(model, tmp_path):
    valid = read_manifest(model.data / "manifests" / "valid.jsonl")
    # a non-speech line (no transcript) of an ood-like manifest is not a talker of the crowd
    silent = Utterance(id="noise-0", audio=valid[0].audio, duration=valid[0].duration, sample_rate=16000,
                       transcript=None, intent="unknown", slots={})  # fmt: skip
    mixed = type(valid)([silent, *valid], valid.path)
    assert [item.id for item in noisy_commands.spoken(mixed)] == [item.id for item in valid]
    three = BabbleBank(valid, 32, 0)
    crowd = BabbleBank(valid, 32, 0, speakers=6)
    assert (three.speakers, crowd.speakers) == (3, 6)
    # unit-RMS talkers at random offsets: the crowd is louder by about sqrt(6 / 3)
    rms = [
        bank.babble("none", 16000, torch.Generator().manual_seed(0)).pow(2).mean().sqrt()
        for bank in (three, crowd)
    ]
    assert 1.1 < float(rms[1] / rms[0]) < 2.0, rms
    with pytest.raises(ValueError, match="speaker"):
        BabbleBank(valid, 32, 0, speakers=0)
