"""data_prep.csv_manifest: your own CSV/TSV files -> manifests and labels.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from corpus_fixtures import assert_one_line_error, call_main, run_module, write_garbage, write_tone

from data_prep.csv_manifest import default_id, main, parse_csv_source, prepare_csv
from data_prep.rows import DataPrepError
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest

# audio file (relative to the data folder) -> (seconds, sample rate, channels)
AUDIO = {
    "clips/spk1/001.wav": (0.5, 16000, 1),
    "clips/spk1/002.wav": (0.7, 8000, 1),
    "clips/spk2/001.wav": (0.4, 16000, 2),
    "clips/spk2/002.flac": (0.6, 16000, 1),
    "clips/spk3/001.wav": (0.3, 16000, 1),
    "clips/spk3/002.wav": (0.35, 16000, 1),
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mydata"
    for name, (seconds, rate, channels) in AUDIO.items():
        write_tone(root / name, seconds, rate, channels)
    return root


def write_rows(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def per_split_files(root: Path) -> dict[str, Path]:
    """train.csv (aliases, slots, an extra column), valid.tsv (an absolute path), test.txt (';')."""
    train = write_rows(
        root / "train.csv",
        [
            ["Path", "Text", "Label", "Speaker", "gender", "slot:device"],
            ["clips/spk1/001.wav", "turn on the lamp", "lamp_on", "spk1", "f", "lamp"],
            ["clips/spk1/002.wav", "lamp off", "lamp_off", "spk1", "f", "lamp"],
            ["clips/spk2/001.wav", "switch the lamp on", "lamp_on", "spk2", "m", "lamp"],
            ["clips/spk2/002.flac", "music please", "play_music", "spk2", "m", "speaker"],
        ],
    )
    valid = write_rows(
        root / "lists" / "valid.tsv",
        [
            ["audio", "transcript", "intent", "id", "slot:device"],
            [str(root / "clips/spk3/001.wav"), "lamp on", "lamp_on", "v1", "lamp"],
        ],
        delimiter="\t",
    )
    test = write_rows(
        root / "lists" / "test.txt",
        [["file", "transcription", "intent"], ["../clips/spk3/002.wav", "some music", "play_music"]],
        delimiter=";",
    )
    return {"train": train, "valid": valid, "test": test}


def test_per_split_files_with_aliases_slots_and_extra_columns(data_dir, tmp_path):
    out = tmp_path / "out"
    manifests = prepare_csv(per_split_files(data_dir), out, num_workers=2)
    assert {split: len(m) for split, m in manifests.items()} == {"train": 4, "valid": 1, "test": 1}

    labels = LabelSet.load(out / "manifests" / "labels.json")
    assert labels.intents == ["lamp_off", "lamp_on", "play_music"]
    assert labels.slots == {"device": ["lamp", "speaker"]}
    train = read_manifest(out / "manifests" / "train.jsonl", labels)
    assert [u.id for u in train] == ["clips-spk1-001", "clips-spk1-002", "clips-spk2-001", "clips-spk2-002"]
    first, narrow, stereo, flac = train
    assert (first.transcript, first.intent, first.speaker) == ("turn on the lamp", "lamp_on", "spk1")
    assert first.slots == {"device": "lamp"} and first.extra == {"gender": "f"}
    assert narrow.sample_rate == 8000 and narrow.duration == pytest.approx(0.7, abs=1e-3)
    assert stereo.duration == pytest.approx(0.4, abs=1e-3)
    assert flac.duration == pytest.approx(0.6, abs=1e-3)
    # relative paths are taken from the CSV's folder, not from the current one
    assert train.audio_path(first) == (data_dir / "clips/spk1/001.wav").absolute()
    valid = read_manifest(out / "manifests" / "valid.jsonl", labels)
    assert valid[0].id == "v1" and valid[0].speaker == ""
    assert valid.audio_path(valid[0]) == data_dir / "clips/spk3/001.wav"
    test = read_manifest(out / "manifests" / "test.jsonl", labels)
    assert test[0].id == "clips-spk3-002" and test[0].slots == {}
    assert test.audio_path(test[0]).resolve() == (data_dir / "clips/spk3/002.wav").resolve()


def single_file(root: Path, extra_rows: list[list[str]] = ()) -> Path:
    rows = [
        ["split", "audio", "text", "intent", "speaker"],
        ["train", "clips/spk1/001.wav", "turn on the lamp", "lamp_on", "spk1"],
        ["train", "clips/spk1/002.wav", "lamp off", "lamp_off", "spk1"],
        ["train", "clips/spk2/001.wav", "lamp on", "lamp_on", "spk2"],
        ["valid", "clips/spk2/002.flac", "switch it off", "lamp_off", "spk2"],
        ["test", "clips/spk3/001.wav", "lamp on now", "lamp_on", "spk3"],
        *extra_rows,
    ]
    return write_rows(root / "all.csv", rows)


def test_cli_single_file_with_split_column_then_skip(data_dir, tmp_path, caplog):
    single_file(data_dir)
    out = tmp_path / "out"
    result = run_module("data_prep.csv_manifest", "--corpus-dir", data_dir, "--csv", "all.csv", "--out", out)
    assert result.returncode == 0, result.stderr
    train = read_manifest(out / "manifests" / "train.jsonl")
    assert [u.speaker for u in train] == ["spk1", "spk1", "spk2"]
    assert [len(read_manifest(out / "manifests" / f"{s}.jsonl")) for s in ("valid", "test")] == [1, 1]
    mtime = (out / "manifests" / "train.jsonl").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert set(prepare_csv([data_dir / "all.csv"], out)) == {"train", "valid", "test"}
    assert "already prepared" in caplog.text
    assert (out / "manifests" / "train.jsonl").stat().st_mtime_ns == mtime


def _break_missing_audio(root: Path) -> tuple[list[str], str]:
    return [
        "test",
        "clips/none.wav",
        "hello",
        "lamp_on",
        "x",
    ], f"{root / 'clips/none.wav'}: audio file not found"


def _break_corrupt_audio(root: Path) -> tuple[list[str], str]:
    write_garbage(root / "clips/bad.wav")
    return ["train", "clips/bad.wav", "hello", "lamp_on", "x"], f"{root / 'clips/bad.wav'}: cannot read audio"


def _break_empty_transcript(root: Path) -> tuple[list[str], str]:
    return ["train", "clips/spk3/002.wav", "", "lamp_on", "x"], "empty transcript"


def _break_empty_intent(root: Path) -> tuple[list[str], str]:
    return ["train", "clips/spk3/002.wav", "lamp", " ", "x"], "empty intent"


def _break_duplicate_id(root: Path) -> tuple[list[str], str]:
    return ["valid", "clips/spk1/001.wav", "again", "lamp_on", "x"], "duplicate utterance id 'clips-spk1-001'"


def _break_intent_not_in_train(root: Path) -> tuple[list[str], str]:
    return [
        "test",
        "clips/spk3/002.wav",
        "play music",
        "play_music",
        "x",
    ], "intent 'play_music' of split 'test'"


def _break_empty_split(root: Path) -> tuple[list[str], str]:
    return ["", "clips/spk3/002.wav", "lamp on", "lamp_on", "x"], "empty split"


BREAKS = [
    _break_missing_audio,
    _break_corrupt_audio,
    _break_empty_transcript,
    _break_empty_intent,
    _break_duplicate_id,
    _break_intent_not_in_train,
    _break_empty_split,
]


@pytest.mark.parametrize("break_corpus", BREAKS, ids=lambda f: f.__name__[len("_break_") :])
def test_invalid_row_is_an_error_or_skipped(data_dir, tmp_path, break_corpus):
    row, fragment = break_corpus(data_dir)
    path = single_file(data_dir, [row])
    out = tmp_path / "out"
    with pytest.raises(DataPrepError) as raised:
        prepare_csv([path], out)
    message = str(raised.value)
    assert message.startswith(f"{path}:7: "), message
    assert fragment in message and "\n" not in message
    assert not out.exists()

    manifests = prepare_csv([path], out, skip_invalid=True)
    assert {split: len(m) for split, m in manifests.items()} == {"train": 3, "valid": 1, "test": 1}
    skipped = (out / "manifests" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}:7: ") and fragment in skipped[0]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (["audio", "text", "speaker"], "missing column(s) 'intent' (or 'label')"),
        (
            ["wav", "intent", "speaker"],
            "missing column(s) 'transcript' (or 'text', 'transcription', 'sentence')",
        ),
        (["audio", "text", "intent", "duration"], "column 'duration' is computed from the audio"),
        (
            ["audio", "text", "transcript", "intent"],
            "columns 'text' and 'transcript' both give the transcript",
        ),
        (["audio", "text", "intent", "split"], "has a 'split' column but its split is given as SPLIT=PATH"),
    ],
)
def test_bad_header_is_an_error_naming_the_file(data_dir, tmp_path, header, fragment):
    path = write_rows(data_dir / "train.csv", [header, ["clips/spk1/001.wav", "a", "b", "c"][: len(header)]])
    out = tmp_path / "out"
    with pytest.raises(DataPrepError) as raised:
        prepare_csv({"train": path}, out)
    assert str(raised.value).startswith(f"{path}: ") and fragment in str(raised.value)
    assert not out.exists()


def test_cli_error_is_one_line(data_dir, tmp_path):
    path = write_rows(data_dir / "train.tsv", [["audio", "text"], ["clips/spk1/001.wav", "hello"]], "\t")
    out = tmp_path / "out"
    code, stderr = call_main(main, "--csv", f"train={path}", "--out", out)
    assert_one_line_error(code, stderr, str(path), "missing column(s) 'intent'")
    assert not out.exists()


def test_no_train_split_and_missing_file(data_dir, tmp_path):
    files = per_split_files(data_dir)
    with pytest.raises(DataPrepError, match="no 'train' split"):
        prepare_csv({"test": files["test"]}, tmp_path / "out")
    with pytest.raises(DataPrepError, match="nope.csv: CSV file not found"):
        prepare_csv({"train": data_dir / "nope.csv"}, tmp_path / "out")


def test_csv_source_and_default_id_parsing():
    assert parse_csv_source("train=a/b.csv") == ("train", Path("a/b.csv"))
    assert parse_csv_source("a/b=c.csv") == (None, Path("a/b=c.csv"))
    assert parse_csv_source("all.tsv") == (None, Path("all.tsv"))
    assert default_id("spk1/001.wav") == "spk1-001"
    assert default_id("../clips/./spk1/001.flac") == "clips-spk1-001"
    assert default_id("/data/x/utt.wav") == "data-x-utt"


def test_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("--csv", "--out", "--corpus-dir", "--skip-invalid", "slot:NAME", "split column"):
        assert fragment in text
