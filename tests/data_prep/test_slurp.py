"""data_prep.slurp: SLURP in its release layout -> one utterance per recording."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import pytest
from corpus_fixtures import assert_one_line_error, call_main, run_module, write_garbage, write_tone

from data_prep.rows import DataPrepError
from data_prep.slurp import main, prepare_slurp
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest


def sentence(slurp_id: int, text: str, scenario: str, action: str, files: list[str]) -> dict:
    """One SLURP JSON line, with the fields the release has."""
    return {
        "slurp_id": slurp_id,
        "sentence": text,
        "sentence_annotation": text,
        "intent": f"{scenario}_{action}",
        "action": action,
        "tokens": [
            {"surface": word, "id": i, "lemma": word, "pos": "X"} for i, word in enumerate(text.split())
        ],
        "scenario": scenario,
        "recordings": [{"file": file, "wer": 0.0, "ent_wer": 0.0, "status": "correct"} for file in files],
        "entities": [],
    }


# fmt: off
SENTENCES = {
    "train": [
        sentence(1, "wake me up at five am this week", "alarm", "set", ["audio-1490200585-headset.flac", "audio-1490200585.flac"]),
        sentence(2, "olly turn the lights off", "iot", "hue_lightoff", ["audio-1434542201-headset.flac"]),
        sentence(3, "what is the weather like", "weather", "query", ["audio-1490007050.flac", "audio-1490007051-headset.flac"]),
        sentence(4, "set an alarm for seven", "alarm", "set", ["audio-1501754212.flac"]),
    ],
    "devel": [
        sentence(5, "lights off please", "iot", "hue_lightoff", ["audio-1501691498-headset.flac", "audio-1501691498.flac"]),
        sentence(9, "how hot is it outside", "weather", "query", ["audio-1501692000.flac"]),
    ],
    "test": [
        sentence(6, "will it rain tomorrow", "weather", "query", ["audio-1497880431.flac", "audio-1497880431-headset.flac"]),
        sentence(7, "wake me at six", "alarm", "set", ["audio-1502200585-headset.flac"]),
    ],
}
# fmt: on
SYNTHETIC = [sentence(8, "switch off the lights", "iot", "hue_lightoff", ["audio--1504190358-gTTS.flac"])]
SECONDS = 0.25  # every real recording; the synthetic one is 0.5 s at 22.05 kHz


def write_jsonl(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )


def rewrite(root: Path, files: dict[str, list]) -> None:
    for name, records in files.items():
        write_jsonl(root / "dataset" / "slurp" / f"{name}.jsonl", records)


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, list]]:
    root = tmp_path / "slurp"
    files = copy.deepcopy({**SENTENCES, "train_synthetic": SYNTHETIC})
    for records in SENTENCES.values():
        for record in records:
            for recording in record["recordings"]:
                write_tone(root / "audio" / "slurp_real" / recording["file"], SECONDS)
    write_tone(root / "audio" / "slurp_synth" / SYNTHETIC[0]["recordings"][0]["file"], 0.5, sample_rate=22050)
    rewrite(root, files)
    return root, files


def test_prepare_slurp_one_utterance_per_recording(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    manifests = prepare_slurp(root, out, num_workers=2)
    assert {split: len(m) for split, m in manifests.items()} == {"train": 6, "valid": 3, "test": 3}

    labels = LabelSet.load(out / "manifests")
    assert labels.intents == ["alarm_set", "iot_hue_lightoff", "weather_query"]
    assert labels.slots == {
        "action": ["hue_lightoff", "query", "set"],
        "scenario": ["alarm", "iot", "weather"],
    }
    train = read_manifest(out / "manifests" / "train.jsonl", labels)
    by_id = {u.id: u for u in train}
    assert set(by_id) == {
        "audio-1490200585-headset", "audio-1490200585", "audio-1434542201-headset",
        "audio-1490007050", "audio-1490007051-headset", "audio-1501754212",
    }  # fmt: skip
    wake = by_id["audio-1490200585"]
    assert wake.intent == "alarm_set" and wake.slots == {"scenario": "alarm", "action": "set"}
    assert wake.transcript == "wake me up at five am this week"
    assert wake.speaker == ""
    assert wake.extra == {"slurp_id": 1}
    assert wake.duration == pytest.approx(SECONDS, abs=1e-3) and wake.sample_rate == 16000
    assert train.audio_path(wake) == (root / "audio" / "slurp_real" / "audio-1490200585.flac").absolute()
    valid = read_manifest(out / "manifests" / "valid.jsonl", labels)
    assert [u.transcript for u in valid] == ["lights off please"] * 2 + ["how hot is it outside"]


def test_headset_only_synthetic_and_audio_dir(corpus, tmp_path):
    root, _ = corpus
    audio = tmp_path / "elsewhere" / "audio"
    shutil.move(root / "audio", audio)
    out = tmp_path / "out"
    manifests = prepare_slurp(root, out, audio_dir=audio, recordings="headset", with_synthetic=True)
    assert {split: len(m) for split, m in manifests.items()} == {"train": 4, "valid": 1, "test": 2}
    train = manifests["train"]
    ids = [u.id for u in train]
    assert ids == [
        "audio-1490200585-headset", "audio-1434542201-headset", "audio-1490007051-headset",
        "audio--1504190358-gTTS",
    ]  # fmt: skip
    synthetic = train[3]
    assert synthetic.sample_rate == 22050 and synthetic.duration == pytest.approx(0.5, abs=1e-3)
    assert train.audio_path(synthetic) == (audio / "slurp_synth" / "audio--1504190358-gTTS.flac").absolute()

    with pytest.raises(DataPrepError, match="slurp_real/audio-1490200585-headset.flac: audio file not found"):
        prepare_slurp(root, tmp_path / "out2")  # the default audio folder is gone


def _break_bad_json(files) -> tuple[str, int, str, int]:
    files["train"].insert(1, '{"slurp_id": 9, "sentence": ')
    return "train", 2, "not valid JSON", 0


def _break_missing_field(files) -> tuple[str, int, str, int]:
    del files["test"][1]["scenario"]
    return "test", 2, "missing field(s) 'scenario'", 1


def _break_missing_audio(files) -> tuple[str, int, str, int]:
    files["train"][3]["recordings"][0]["file"] = "audio-0000000000.flac"
    return "train", 4, "slurp_real/audio-0000000000.flac: audio file not found", 1


def _break_corrupt_audio(files) -> tuple[str, int, str, int]:
    files["devel"][0]["recordings"][1]["file"] = "audio-corrupt.flac"
    return "devel", 1, "slurp_real/audio-corrupt.flac: cannot read audio", 1


def _break_empty_sentence(files) -> tuple[str, int, str, int]:
    files["test"][0]["sentence"] = ""
    return "test", 1, "empty transcript", 2


def _break_duplicate_recording(files) -> tuple[str, int, str, int]:
    files["test"][1]["recordings"].append(dict(files["train"][1]["recordings"][0]))
    return "test", 2, "duplicate utterance id 'audio-1434542201-headset'", 0  # the copy is dropped


def _break_intent_not_in_train(files) -> tuple[str, int, str, int]:
    files["devel"][0]["scenario"] = "music"
    return "devel", 1, "intent 'music_hue_lightoff' of split 'valid' is not in train", 2


BREAKS = [
    _break_bad_json,
    _break_missing_field,
    _break_missing_audio,
    _break_corrupt_audio,
    _break_empty_sentence,
    _break_duplicate_recording,
    _break_intent_not_in_train,
]


@pytest.mark.parametrize("break_corpus", BREAKS, ids=lambda f: f.__name__[len("_break_") :])
def test_invalid_line_is_an_error_or_skipped(corpus, tmp_path, break_corpus):
    root, files = corpus
    write_garbage(root / "audio" / "slurp_real" / "audio-corrupt.flac")
    name, line, fragment, dropped = break_corpus(files)
    rewrite(root, files)
    path = root / "dataset" / "slurp" / f"{name}.jsonl"

    out = tmp_path / "out"
    with pytest.raises(DataPrepError) as raised:
        prepare_slurp(root, out)
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message and "\n" not in message
    assert not out.exists()

    manifests = prepare_slurp(root, out, skip_invalid=True)
    split = {"devel": "valid"}.get(name, name)
    expected = {"train": 6, "valid": 3, "test": 3}
    expected[split] -= dropped
    assert {s: len(m) for s, m in manifests.items()} == expected
    skipped = (out / "manifests" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == max(dropped, 1)
    assert all(row.startswith(f"{path}:{line}: ") and fragment in row for row in skipped)


def test_cli_prepares_then_skips(corpus, tmp_path, caplog):
    root, _ = corpus
    out = tmp_path / "out"
    result = run_module("data_prep.slurp", "--corpus-dir", root, "--out", out, "--recordings", "headset")
    assert result.returncode == 0, result.stderr
    assert "train: 3 utterances" in result.stderr
    train = out / "manifests" / "train.jsonl"
    mtime = train.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert prepare_slurp(root, out, recordings="headset")["train"][0].id == "audio-1490200585-headset"
    assert "already prepared" in caplog.text
    assert train.stat().st_mtime_ns == mtime


def test_cli_error_is_one_line(corpus, tmp_path):
    root, _ = corpus
    (root / "dataset" / "slurp" / "devel.jsonl").unlink()
    code, stderr = call_main(main, "--corpus-dir", root, "--out", tmp_path / "out")
    assert_one_line_error(code, stderr, "devel.jsonl", "split file not found")


def test_missing_synthetic_file_and_bad_recordings_choice(corpus, tmp_path):
    root, _ = corpus
    (root / "dataset" / "slurp" / "train_synthetic.jsonl").unlink()
    with pytest.raises(DataPrepError, match="train_synthetic.jsonl"):
        prepare_slurp(root, tmp_path / "out", with_synthetic=True)
    with pytest.raises(DataPrepError, match="choose from all, headset"):
        prepare_slurp(root, tmp_path / "out", recordings="lapel")


def test_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--corpus-dir",
        "--out",
        "--audio-dir",
        "--with-synthetic",
        "--recordings",
        "--skip-invalid",
    ):
        assert option in text
