"""data_prep.fsc: Fluent Speech Commands in its release layout -> manifests and labels.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from corpus_fixtures import assert_one_line_error, call_main, run_module, write_garbage, write_tone
from fsc_fixtures import SPEAKERS, make_fsc, rewrite, write_split_csv

from data_prep.fsc import main, prepare_fsc
from data_prep.rows import DataPrepError
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, list[list[str]]]]:
    root = tmp_path / "fluent_speech_commands_dataset"
    return root, make_fsc(root)


def test_prepare_fsc_writes_manifests_and_labels(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "data" / "fsc"
    manifests = prepare_fsc(root, out, num_workers=2)

    assert {split: len(m) for split, m in manifests.items()} == {"train": 6, "valid": 2, "test": 2}
    labels = LabelSet.load(out / "manifests" / "labels.json")
    assert labels.intents == [
        "activate_lights_kitchen",
        "change language_Chinese_none",
        "change language_none_none",
        "decrease_volume_none",
    ]
    assert labels.slots == {
        "action": ["activate", "change language", "decrease"],
        "location": ["kitchen", "none"],
        "object": ["Chinese", "lights", "none", "volume"],
    }
    train = read_manifest(out / "manifests" / "train.jsonl", labels)
    by_id = {u.id: u for u in train}
    chinese = by_id[f"{SPEAKERS[1]}-1a2b3c40-4474-11e9-a9a5-5dbec3b8816a"]
    assert chinese.intent == "change language_Chinese_none"
    assert chinese.slots == {"action": "change language", "object": "Chinese", "location": "none"}
    assert chinese.speaker == SPEAKERS[1]
    assert chinese.transcript == "Switch to Chinese"
    assert chinese.sample_rate == 8000
    assert chinese.duration == pytest.approx(0.8, abs=1e-3)
    stereo = by_id[f"{SPEAKERS[1]}-1f00ab10-4474-11e9-a9a5-5dbec3b8816a"]
    assert stereo.duration == pytest.approx(0.5, abs=1e-3)
    # the corpus lies outside the output folder: absolute paths that point at the wavs
    for utterance in train:
        assert Path(utterance.audio).is_absolute()
        assert train.audio_path(utterance).is_file()
    assert (
        train.audio_path(chinese).resolve()
        == (root / "wavs/speakers" / SPEAKERS[1] / "1a2b3c40-4474-11e9-a9a5-5dbec3b8816a.wav").resolve()
    )
    test = read_manifest(out / "manifests" / "test.jsonl", labels)
    assert [u.intent for u in test] == ["change language_Chinese_none", "change language_none_none"]
    assert (out / "manifests" / ".done").is_file()
    assert not (out / "manifests" / "skipped.txt").exists()


def test_audio_inside_the_output_folder_is_written_relative(tmp_path):
    root = tmp_path / "data" / "fsc" / "corpus"
    make_fsc(root)
    out = tmp_path / "data" / "fsc"
    manifests = prepare_fsc(root, out)
    first = manifests["train"][0]
    assert first.audio.startswith("../corpus/wavs/speakers/")
    reread = read_manifest(out / "manifests" / "train.jsonl")
    assert reread.audio_path(reread[0]).resolve() == (root / first.audio[len("../corpus/") :]).resolve()


def test_second_run_skips_and_changed_input_reruns(corpus, tmp_path, caplog):
    root, splits = corpus
    out = tmp_path / "out"
    prepare_fsc(root, out)
    manifest = out / "manifests" / "train.jsonl"
    mtime = manifest.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = prepare_fsc(root, out)
    assert "already prepared" in caplog.text
    assert manifest.stat().st_mtime_ns == mtime
    assert len(again["train"]) == 6
    # other options -> another fingerprint -> prepared again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare_fsc(root, out, skip_invalid=True)
    assert "already prepared" not in caplog.text
    # a changed split file -> prepared again, with its new contents
    splits["train"].append(splits["valid"][0])
    splits["valid"] = splits["valid"][1:]
    rewrite(root, splits)
    assert len(prepare_fsc(root, out)["train"]) == 7


def test_failed_rerun_leaves_the_previous_manifests(corpus, tmp_path):
    root, splits = corpus
    out = tmp_path / "out"
    prepare_fsc(root, out)
    before = (out / "manifests" / "train.jsonl").read_text()
    splits["test"][0][2] = ""
    rewrite(root, splits)
    with pytest.raises(DataPrepError, match="empty transcript"):
        prepare_fsc(root, out)
    assert (out / "manifests" / "train.jsonl").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["manifests"]  # no temporary folder left


def _break_missing_audio(root: Path, splits) -> tuple[str, int, str]:
    (root / splits["valid"][1][0]).unlink()
    return "valid", 1, "audio file not found"


def _break_corrupt_audio(root: Path, splits) -> tuple[str, int, str]:
    write_garbage(root / splits["train"][2][0])
    return "train", 2, "cannot read audio"


def _break_empty_transcript(root: Path, splits) -> tuple[str, int, str]:
    splits["train"][1][2] = "  "
    return "train", 1, "empty transcript"


def _break_duplicate_id(root: Path, splits) -> tuple[str, int, str]:
    splits["test"].append(list(splits["train"][0]))
    return "test", 2, "duplicate utterance id"


def _break_intent_not_in_train(root: Path, splits) -> tuple[str, int, str]:
    row = list(splits["test"][1])
    row[3:6] = ["bring", "shoes", "none"]
    write_tone(root / "wavs/speakers/x/new.wav", 0.3)
    row[0] = "wavs/speakers/x/new.wav"
    splits["test"].append(row)
    return "test", 2, "intent 'bring_shoes_none' of split 'test' is not in train"


def _break_field_count(root: Path, splits) -> tuple[str, int, str]:
    splits["valid"][0] = splits["valid"][0][:4]
    return "valid", 0, "row has 5 field(s), the header has 7"


BREAKS = [
    _break_missing_audio,
    _break_corrupt_audio,
    _break_empty_transcript,
    _break_duplicate_id,
    _break_intent_not_in_train,
    _break_field_count,
]


@pytest.mark.parametrize("break_corpus", BREAKS, ids=lambda f: f.__name__[len("_break_") :])
def test_invalid_row_is_an_error_or_skipped(corpus, tmp_path, break_corpus):
    root, splits = corpus
    split, index, fragment = break_corpus(root, splits)
    rewrite(root, splits)
    csv_path = root / "data" / f"{split}_data.csv"
    line = index + 2  # header on line 1
    counts = {name: len(rows) for name, rows in splits.items()}

    out = tmp_path / "out"
    with pytest.raises(DataPrepError) as raised:
        prepare_fsc(root, out)
    message = str(raised.value)
    assert message.startswith(f"{csv_path}:{line}: "), message
    assert fragment in message and "\n" not in message
    if "audio" in fragment:
        assert str(root / splits[split][index][0]) in message
    assert not out.exists()

    manifests = prepare_fsc(root, out, skip_invalid=True)
    counts[split] -= 1
    assert {name: len(m) for name, m in manifests.items()} == counts
    skipped = (out / "manifests" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{csv_path}:{line}: ") and fragment in skipped[0]


def test_missing_column_cli_error_is_one_line(corpus, tmp_path):
    root, _ = corpus
    path = root / "data" / "valid_data.csv"
    path.write_text(path.read_text().replace(",transcription,", ",transcript,", 1))
    out = tmp_path / "out"
    code, stderr = call_main(main, "--corpus-dir", root, "--out", out)
    assert_one_line_error(
        code, stderr, str(path), "missing column(s) 'transcription'", "unexpected: 'transcript'"
    )
    assert not out.exists()


def test_cli_prepares_and_reruns_skip(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    result = run_module("data_prep.fsc", "--corpus-dir", root, "--out", out, "--num-workers", "2")
    assert result.returncode == 0, result.stderr
    lines = (out / "manifests" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["intent"] == "activate_lights_kitchen"
    assert (
        json.loads((out / "manifests" / "labels.json").read_text())["intents"][0] == "activate_lights_kitchen"
    )
    # the second run, in process: skipped
    assert call_main(main, "--corpus-dir", root, "--out", out)[0] == 0
    assert (out / "manifests" / "train.jsonl").read_text().splitlines() == lines


def test_challenge_splits_through_the_splits_option(corpus, tmp_path):
    root, splits = corpus
    write_split_csv(root / "challenge" / "speaker_test_data.csv", splits["test"] + splits["valid"])
    out = tmp_path / "out"
    code, _ = call_main(
        main, "--corpus-dir", root, "--out", out,
        "--splits", "train=data/train_data.csv,test_speaker=challenge/speaker_test_data.csv",
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (out / "manifests").glob("*.jsonl")) == [
        "test_speaker.jsonl",
        "train.jsonl",
    ]
    assert len(read_manifest(out / "manifests" / "test_speaker.jsonl")) == 4


@pytest.mark.parametrize(
    ("splits", "fragment"),
    [
        ("valid=data/valid_data.csv", "no 'train' split"),
        ("train=data/nope.csv", "nope.csv: train split file not found"),
        ("train", "expected NAME=PATH"),
        ("train=data/train_data.csv,labels=data/test_data.csv", "invalid split name 'labels'"),
    ],
)
def test_bad_splits_option(corpus, tmp_path, splits, fragment):
    root, _ = corpus
    code, stderr = call_main(main, "--corpus-dir", root, "--out", tmp_path / "out", "--splits", splits)
    assert_one_line_error(code, stderr, fragment)


def test_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--corpus-dir", "--out", "--splits", "--skip-invalid", "--num-workers", "--log-level"):
        assert option in text
