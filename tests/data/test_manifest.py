"""pipeline.data.manifest: JSON Lines round trip, validation with file and line, atomic writes."""

from __future__ import annotations

import json

import pytest

from pipeline.data.labels import LabelSet
from pipeline.data.manifest import (
    Manifest,
    ManifestError,
    Utterance,
    read_manifest,
    require_transcripts,
    write_manifest,
)


def utterance(id_: str = "u1", **overrides) -> Utterance:
    fields = dict(
        id=id_, audio="audio/u1.wav", duration=1.25, sample_rate=16000, transcript="turn on the lights",
        intent="activate_lights_none", slots={"action": "activate"}, speaker="spk1",
    )  # fmt: skip
    fields.update(overrides)
    return Utterance(**fields)


def test_round_trip_keeps_unknown_fields(tmp_path):
    first = utterance(extra={"engine": "espeak", "nested": {"a": 1}})
    path = write_manifest(tmp_path / "train.jsonl", [first, utterance("u2", audio="/abs/u2.wav")])
    manifest = read_manifest(path)
    assert len(manifest) == 2 and manifest.total_duration == 2.5
    assert manifest[0] == first
    assert json.loads(path.read_text().splitlines()[0])["engine"] == "espeak"
    assert manifest.audio_path(manifest[0]) == tmp_path / "audio" / "u1.wav"
    assert str(manifest.audio_path(manifest[1])) == "/abs/u2.wav"


def write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" if isinstance(line, dict) else line for line in lines))
    return path


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"transcript": "  "}, "empty transcript"),
        ({"duration": -1}, "duration must be > 0"),
        ({"duration": "1.0"}, "duration must be > 0"),
        ({"sample_rate": 16000.5}, "sample_rate must be a positive integer"),
        ({"intent": ""}, "'intent' must be a non-empty string"),
        ({"slots": {"action": 3}}, "slots must map strings to strings"),
    ],
)
def test_bad_line_is_reported_with_file_and_line(tmp_path, bad, message):
    good = utterance().to_dict()
    path = write_lines(tmp_path / "m.jsonl", [good, {**utterance("u2").to_dict(), **bad}])
    with pytest.raises(ManifestError, match=rf"m\.jsonl:2: .*{message}"):
        read_manifest(path)


def test_structural_problems(tmp_path):
    missing = utterance().to_dict()
    del missing["intent"], missing["duration"]
    with pytest.raises(ManifestError, match=r":1: missing field\(s\): duration, intent"):
        read_manifest(write_lines(tmp_path / "a.jsonl", [missing]))
    with pytest.raises(ManifestError, match=r"b\.jsonl:2: not valid JSON"):
        read_manifest(write_lines(tmp_path / "b.jsonl", [utterance().to_dict(), "{oops\n"]))
    with pytest.raises(ManifestError, match="duplicate utterance id"):
        read_manifest(write_lines(tmp_path / "c.jsonl", [utterance().to_dict()] * 2))
    with pytest.raises(ManifestError, match="manifest is empty"):
        read_manifest(write_lines(tmp_path / "d.jsonl", ["\n"]))
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")


def test_validation_against_labels_names_the_line(tmp_path):
    labels = LabelSet(["activate_lights_none"], {"action": ["activate"]})
    path = write_manifest(tmp_path / "m.jsonl", [utterance(), utterance("u2", intent="fly_away")])
    with pytest.raises(ManifestError, match=r"m\.jsonl: line 2: unknown intent 'fly_away'"):
        read_manifest(path, labels)
    assert len(read_manifest(path)) == 2  # without labels the manifest itself is fine


def test_failed_write_leaves_the_old_manifest_untouched(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [utterance()])
    before = path.read_bytes()
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: .*empty transcript"):
        write_manifest(path, [utterance("u2"), utterance("u3", transcript="  ")])
    with pytest.raises(ManifestError, match="duplicate"):
        Manifest([utterance(), utterance()], path).write()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_a_line_without_transcript_is_an_audio_only_utterance(tmp_path):
    spoken = utterance("u2", transcript="")
    path = write_manifest(tmp_path / "eval.jsonl", [utterance(), spoken])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "transcript" in lines[0] and "transcript" not in lines[1]  # the field is left out
    null = {**lines[1], "transcript": None}
    manifest = read_manifest(write_lines(tmp_path / "null.jsonl", [lines[0], null]))
    assert manifest[1] == spoken and not manifest[1].has_transcript and manifest[0].has_transcript
    assert read_manifest(path)[1] == spoken
    require_transcripts(Manifest([utterance()], path))
    with pytest.raises(
        ManifestError, match=r"eval\.jsonl: line 2: utterance 'u2' has no transcript, which the teacher"
    ):
        require_transcripts(read_manifest(path))
