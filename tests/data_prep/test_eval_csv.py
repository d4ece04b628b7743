"""data_prep.eval_csv (``--eval-csv NAME=FILE.csv``): recordings added to a prepared corpus as one
more split, checked against its labels.json, transcripts optional, never a training split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_fixtures import assert_one_line_error, call_main, write_tone
from test_csv_manifest import AUDIO, per_split_files, write_rows

from data_prep.csv_manifest import main, prepare_csv
from data_prep.eval_csv import add_eval_split
from data_prep.rows import DataPrepError
from pipeline.data.manifest import read_manifest


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A prepared CSV corpus (intents lamp_off, lamp_on, play_music; slot device: lamp, speaker,
    none) and two recordings of one's own beside it."""
    root = tmp_path / "mydata"
    for name, (seconds, rate, channels) in AUDIO.items():
        write_tone(root / name, seconds, rate, channels)
    files = per_split_files(root)
    rows = [line.split(",") for line in files["train"].read_text().splitlines()]
    rows.append(["clips/spk3/001.wav", "nothing", "play_music", "spk3", "f", "none"])
    write_rows(files["train"], rows)
    out = tmp_path / "out"
    prepare_csv(files, out)
    write_tone(tmp_path / "mine" / "a.wav", 0.5)
    write_tone(tmp_path / "mine" / "b.flac", 0.8, 8000)
    return out


def test_recordings_become_a_split_without_transcripts(corpus, tmp_path):
    table = write_rows(
        tmp_path / "mine" / "rec.csv",
        [["audio", "intent", "slot:device", "speaker"], ["a.wav", "lamp_on", "lamp", "me"],
         ["b.flac", "play_music", "", "me"]],
    )  # fmt: skip
    code, stderr = call_main(main, "--out", corpus, "--eval-csv", f"kitchen={table}")
    assert code == 0, stderr
    manifests = corpus / "manifests"
    labels = json.loads((manifests / "labels.json").read_text())
    kitchen = read_manifest(manifests / "kitchen.jsonl")
    assert [(u.intent, u.slots, u.speaker, u.has_transcript) for u in kitchen] == [
        ("lamp_on", {"device": "lamp"}, "me", False),
        ("play_music", {"device": "none"}, "me", False),  # an empty cell: the slot's none
    ]
    assert kitchen[1].sample_rate == 8000 and abs(kitchen[1].duration - 0.8) < 1e-3
    assert Path(kitchen[0].audio).is_absolute() and Path(kitchen[0].audio).is_file()
    assert all("transcript" not in json.loads(line) for line in (manifests / "kitchen.jsonl").open())
    assert json.loads((manifests / "labels.json").read_text()) == labels  # labels untouched
    assert json.loads((manifests / "eval_csv.json").read_text()) == {"kitchen": str(table)}
    assert "2 recordings" in stderr and "never trained on" in stderr
    # a transcript column is kept; the same name again replaces the split it wrote
    with_text = write_rows(
        tmp_path / "mine" / "text.csv", [["wav", "label", "text"], ["a.wav", "lamp_off", "lamp off"]]
    )
    assert add_eval_split(corpus, "kitchen", with_text)[0].transcript == "lamp off"
    assert len(read_manifest(manifests / "kitchen.jsonl")) == 1


def test_a_corpus_and_its_recordings_in_one_command(tmp_path):
    root = tmp_path / "mydata"
    for name, (seconds, rate, channels) in AUDIO.items():
        write_tone(root / name, seconds, rate, channels)
    files = per_split_files(root)
    table = write_rows(root / "rec.csv", [["audio", "intent"], ["clips/spk1/001.wav", "lamp_on"]])
    arguments = [item for split, path in files.items() for item in ("--csv", f"{split}={path}")]
    code, stderr = call_main(main, *arguments, "--eval-csv", f"real={table}", "--out", tmp_path / "out")
    assert code == 0, stderr
    splits = sorted(path.stem for path in (tmp_path / "out" / "manifests").glob("*.jsonl"))
    assert splits == ["real", "test", "train", "valid"]


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ([["audio", "intent"], ["a.wav", "make_tea"]], ["rec.csv:2: intent 'make_tea' is not in", "labels.json"]),
        ([["audio", "intent", "slot:device"], ["a.wav", "lamp_on", "kettle"]], ["rec.csv:2: slot device='kettle'"]),
        ([["audio", "intent", "slot:colour"], ["a.wav", "lamp_on", "red"]], ["slot column(s) colour not in labels.json"]),
        ([["audio", "transcript"], ["a.wav", "lamp on"]], ["missing column(s) 'intent'"]),
        ([["audio", "intent"], ["missing.wav", "lamp_on"]], ["rec.csv:2:", "missing.wav"]),
    ],
)  # fmt: skip
def test_bad_recordings_are_one_line_errors(corpus, tmp_path, rows, fragments):
    table = write_rows(tmp_path / "mine" / "rec.csv", rows)
    code, stderr = call_main(main, "--out", corpus, "--eval-csv", f"kitchen={table}")
    assert_one_line_error(code, stderr, *fragments)
    assert not (corpus / "manifests" / "kitchen.jsonl").exists()


def test_names_that_are_not_free(corpus, tmp_path):
    table = write_rows(tmp_path / "mine" / "rec.csv", [["audio", "intent"], ["a.wav", "lamp_on"]])
    before = (corpus / "manifests" / "test.jsonl").read_bytes()
    for name in ("train", "valid", "test"):  # the recipes' training splits, the corpus's own split
        with pytest.raises(DataPrepError, match="is a split of the corpus itself"):
            add_eval_split(corpus, name, table)
    assert (corpus / "manifests" / "test.jsonl").read_bytes() == before
    with pytest.raises(DataPrepError, match="prepare the corpus before adding --eval-csv splits"):
        add_eval_split(tmp_path / "nowhere", "kitchen", table)
    code, stderr = call_main(main, "--out", corpus, "--eval-csv", str(table))
    assert_one_line_error(code, stderr, "give the split's name, as NAME=PATH")
