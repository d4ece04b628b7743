"""data_prep.full_grammar: the deployed model's training folder, train + train_rest (every
expression of the grammar) and valid, pointing at the corpus's audio."""

from __future__ import annotations

from data_prep.full_grammar import main
from pipeline.data.audio import SAMPLE_RATE
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Utterance, read_manifest, write_manifest
from tests.corpus_fixtures import call_main, write_tone


def write_corpus(folder, splits=("train", "valid", "test", "train_rest")):
    labels = LabelSet(intents=["on", "off"])
    for split in splits:
        phrasing = "unseen" if split == "train_rest" else "seen"
        utterances = [
            Utterance(
                f"{split}{i}",
                f"../audio/{split}{i}.wav",
                1.0,
                SAMPLE_RATE,
                f"turn {name}",
                name,
                extra={"phrasing": phrasing},
            )  # fmt: skip
            for i, name in enumerate(labels.intents)
        ]
        for utterance in utterances:
            write_tone(folder / "audio" / f"{utterance.id}.wav", 1.0)
        write_manifest(folder / "manifests" / f"{split}.jsonl", utterances)
    labels.save(folder / "manifests" / "labels.json")


def test_train_gains_train_rest_and_valid_stays(tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "corpus" / "full"
    write_corpus(corpus)
    code, log = call_main(main, "--corpus", corpus, "--out", out)
    assert code == 0, log
    labels = LabelSet.load(out / "manifests" / "labels.json")
    train = read_manifest(out / "manifests" / "train.jsonl", labels)
    assert [u.id for u in train] == ["train0", "train1", "train_rest0", "train_rest1"]
    assert all(train.audio_path(u).is_file() for u in train)  # the corpus's audio, not copied
    assert [u.id for u in read_manifest(out / "manifests" / "valid.jsonl")] == ["valid0", "valid1"]
    assert sorted(p.name for p in (out / "manifests").iterdir()) == [
        "labels.json",
        "train.jsonl",
        "valid.jsonl",
    ]


def test_a_corpus_without_train_rest_is_one_line(tmp_path):
    write_corpus(tmp_path / "corpus", ("train", "valid"))
    code, log = call_main(main, "--corpus", tmp_path / "corpus", "--out", tmp_path / "full")
    assert code == 1 and "missing split(s) train_rest" in log and len(log.strip().splitlines()) == 1
    assert not (tmp_path / "full" / "manifests" / "labels.json").exists()
