"""The built-in corpus at size `tiny` (the FSC grammar file, every TTS engine installed): real TTS
audio and real assertions on its splits; another grammar file through --grammar."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
import soundfile

from data_prep.synthetic import engines as engines_module
from data_prep.synthetic.__main__ import main as synthetic_main
from data_prep.synthetic.engines import EngineUnavailable, available_engines, kokoro_phonemes
from data_prep.synthetic.generate import (
    DEFAULT_GRAMMAR,
    SPLITS,
    UNSEEN_ENGINE_SPLIT,
    SyntheticConfig,
    SyntheticError,
    plan_corpus,
    prepare_synthetic,
)
from pipeline.core.errors import SlukdError
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import read_manifest
from pipeline.grammar.load import load_grammar

FSC_INTENTS = load_grammar(DEFAULT_GRAMMAR).intents


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    manifests = prepare_synthetic(out, SyntheticConfig(size="tiny", seed=0))
    return out, manifests


def speakers(manifest):
    return {u.speaker for u in manifest}


def texts(manifest):
    return {u.transcript for u in manifest}


def test_files_and_sizes(corpus):
    out, manifests = corpus
    expected = SPLITS if "piper" in available_engines() else SPLITS[:-1]  # piper is held out by default
    assert tuple(manifests) == expected
    for split in expected:
        assert (out / "manifests" / f"{split}.jsonl").is_file()
    assert (out / ".done").is_file() and (out / "plan.json").is_file()
    labels = LabelSet.load(out / "manifests")
    assert labels.intents == FSC_INTENTS and len(FSC_INTENTS) == 31
    assert set(labels.slots) == {"action", "object", "location"}
    assert (
        labels.slots["location"] == ["none", "kitchen", "bedroom", "washroom"]
        and "none" in labels.slots["action"]
    )
    total = sum(len(m) for m in manifests.values())
    assert 90 <= total <= 150
    for split, manifest in manifests.items():
        assert read_manifest(manifest.path, labels).utterances == manifest.utterances, split


def test_split_contract(corpus):
    _, m = corpus
    train, valid, test, unseen = (m[s] for s in SPLITS[:4])
    assert {u.intent for u in train} == set(FSC_INTENTS)
    assert speakers(test).isdisjoint(speakers(train))
    assert speakers(unseen).isdisjoint(speakers(train))
    assert speakers(valid) <= speakers(train)
    assert texts(test) <= texts(train)  # seen phrasings: texts said in train, by other voices
    assert texts(unseen).isdisjoint(texts(train))
    pairs = [(u.speaker, u.transcript) for split in m for u in m[split]]
    assert len(pairs) == len(set(pairs)), "a (speaker, text) pair is recorded twice"
    assert {u.extra["phrasing"] for split in ("train", "test") for u in m[split]} == {"seen"}
    assert {u.extra["phrasing"] for u in unseen} == {"unseen"}
    # valid: half seen phrasings, half held out for it, so that selection is not at its ceiling
    assert Counter(u.extra["phrasing"] for u in valid) == {"seen": 8, "unseen": 8}
    assert texts([u for u in valid if u.extra["phrasing"] == "unseen"]).isdisjoint(
        texts(train) | texts(unseen)
    )
    assert texts([u for u in valid if u.extra["phrasing"] == "seen"]) <= texts(train)
    # train_rest: the held-out pools in training voices, for the model to deploy; texts of its own
    rest = m["train_rest"]
    assert speakers(rest) <= speakers(train) and {u.extra["phrasing"] for u in rest} == {"unseen"}
    # 16 asked, and a held-out shape the draws missed is said once more (every expression is taught)
    shapes = {u.extra["shape"] for split in m for u in m[split]}
    assert 16 <= len(rest) <= 16 + len(shapes) and texts(rest).isdisjoint(texts(train))
    assert {u.extra["shape"] for u in rest} | {u.extra["shape"] for u in train} >= {
        u.extra["shape"] for u in [*valid, *unseen]
    }
    for split in m:  # FSC's two views agree: the intent is its slots' values
        assert all(
            u.intent == "_".join(u.slots[s] for s in ("action", "object", "location")) for u in m[split]
        )
        assert all(u.extra["shape"] for u in m[split])


def test_unseen_engine_split_holds_one_engine_out_of_training(corpus):
    _, m = corpus
    if UNSEEN_ENGINE_SPLIT not in m:
        pytest.skip("piper, the default held-out engine, is not installed")
    held_out = m[UNSEEN_ENGINE_SPLIT]
    assert {u.extra["engine"] for u in held_out} == {"piper"}
    for split in SPLITS[:5]:
        assert "piper" not in {u.extra["engine"] for u in m[split]}, split
    seen = [u for u in held_out if u.extra["phrasing"] == "seen"]
    unseen = [u for u in held_out if u.extra["phrasing"] == "unseen"]
    assert len(seen) == len(unseen) == 8  # both seen and unseen phrasings
    assert texts(seen) <= texts(m["train"]) and texts(unseen).isdisjoint(texts(m["train"]))


def test_held_out_engine_option():
    # a missing held-out engine leaves no such split; another engine can be held out instead
    plan, pools = plan_corpus(SyntheticConfig(size="tiny", held_out_engine="piper"), ["espeak"])
    assert UNSEEN_ENGINE_SPLIT not in pools and {p.split for p in plan} == set(SPLITS[:5])
    plan, pools = plan_corpus(SyntheticConfig(size="tiny", held_out_engine="none"), ["espeak"])
    assert UNSEEN_ENGINE_SPLIT not in pools
    plan, pools = plan_corpus(SyntheticConfig(size="tiny", held_out_engine="espeak"), ["espeak", "piper"])
    assert {s.engine for s in pools[UNSEEN_ENGINE_SPLIT]} == {"espeak"}
    assert {s.engine for s in pools["train"] + pools["test"]} == {"piper"}
    assert {p.speaker.engine for p in plan if p.split == UNSEEN_ENGINE_SPLIT} == {"espeak"}
    with pytest.raises(SyntheticError, match="only engine available"):
        plan_corpus(SyntheticConfig(size="tiny", held_out_engine="espeak"), ["espeak"])
    with pytest.raises(SyntheticError, match="unknown held-out engine 'sam'"):
        plan_corpus(SyntheticConfig(size="tiny", held_out_engine="sam"), ["espeak"])
    assert issubclass(SyntheticError, SlukdError) and issubclass(EngineUnavailable, SlukdError)


def test_kokoro_reads_espeak_phonemes_in_its_own_symbols():
    assert kokoro_phonemes("tʃˈeɪndʒ ðə lˈæŋɡwɪdʒ") == "ʧˈAnʤ ðə lˈæŋɡwɪʤ"
    assert kokoro_phonemes("tˈɜːn ɔnðə lˈaɪts") == "tˈɜɹn ɔnðə lˈIts"


def test_audio_is_16k_mono_16bit_and_matches_the_manifest(corpus):
    _, manifests = corpus
    for manifest in manifests.values():
        for utterance in manifest:
            path = manifest.audio_path(utterance)
            info = soundfile.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames / 16000 == pytest.approx(utterance.duration, abs=1e-3)
            assert 0.5 < utterance.duration < 8.0
    first = manifests["train"][0]
    samples, _ = soundfile.read(str(manifests["train"].audio_path(first)))
    rms = np.sqrt(np.mean(samples**2))
    assert rms > 0.01  # speech, not silence


def test_stats_match_the_manifests(corpus):
    out, manifests = corpus
    stats = json.loads((out / "manifests" / "stats.json").read_text())
    for split, manifest in manifests.items():
        entry = stats["splits"][split]
        assert entry["utterances"] == len(manifest)
        assert entry["speakers"] == len(speakers(manifest))
        assert entry["phrasings"] == len(texts(manifest))
        assert entry["hours"] == pytest.approx(manifest.total_duration / 3600, abs=1e-3)
        assert sum(v["utterances"] for v in entry["per_intent"].values()) == len(manifest)
    assert stats["generation"]["hours_of_audio_per_minute"] > 0


def test_rerun_skips_and_a_new_seed_rebuilds(corpus, caplog):
    out, manifests = corpus
    stamp = (out / "manifests" / "train.jsonl").stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = prepare_synthetic(out, SyntheticConfig(size="tiny", seed=0))
    assert "already generated" in caplog.text
    assert (out / "manifests" / "train.jsonl").stat().st_mtime_ns == stamp
    assert again["train"].utterances == manifests["train"].utterances


def test_plan_is_deterministic_from_the_seed():
    engines = available_engines()
    first, _ = plan_corpus(SyntheticConfig(size="small", seed=3), engines)
    second, _ = plan_corpus(SyntheticConfig(size="small", seed=3), engines)
    other, _ = plan_corpus(SyntheticConfig(size="small", seed=4), engines)
    assert first == second
    assert [p.text for p in first] != [p.text for p in other]


def test_interrupted_run_resumes(tmp_path):
    out = tmp_path / "corpus"
    config = SyntheticConfig(size="tiny", seed=1, engines=["espeak"])
    plan, _ = plan_corpus(config, ["espeak"])
    manifests = prepare_synthetic(out, config)
    kept = manifests["train"].audio_path(manifests["train"][0])
    stamp = kept.stat().st_mtime_ns
    (out / ".done").unlink()  # as if killed before the end
    lost = manifests["test"].audio_path(manifests["test"][0])
    lost.unlink()
    prepare_synthetic(out, config)
    assert lost.is_file() and kept.stat().st_mtime_ns == stamp  # only the missing file is redone
    assert (out / ".done").is_file()
    assert len(plan) == sum(len(read_manifest(out / "manifests" / f"{s}.jsonl")) for s in SPLITS[:5])


def test_missing_engines_are_skipped_and_none_is_an_error(monkeypatch, caplog):
    def unavailable(cls):
        raise EngineUnavailable(f"{cls.name}: not installed here")

    monkeypatch.setattr(engines_module.PiperEngine, "check", classmethod(unavailable))
    with caplog.at_level(logging.WARNING):
        assert available_engines(["espeak", "piper"]) == ["espeak"]
    assert "skipping TTS engine piper" in caplog.text
    for cls in engines_module.ENGINES.values():
        monkeypatch.setattr(cls, "check", classmethod(unavailable))
    with pytest.raises(EngineUnavailable, match="no TTS engine is available.*pip install 'slukd\\[tts\\]'"):
        available_engines()
    with pytest.raises(SlukdError, match="unknown TTS engine"):
        available_engines(["sam"])


def test_cli_reports_one_line_errors(tmp_path, capsys):
    assert synthetic_main(["--out", str(tmp_path / "x"), "--engines", "sam"]) == 1
    assert "unknown TTS engine(s) sam" in capsys.readouterr().err
    assert (
        synthetic_main(["--out", str(tmp_path / "x"), "--engines", "espeak", "--held-out-engine", "sam"]) == 1
    )
    assert "unknown held-out engine 'sam'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic_main(["--out", str(tmp_path / "x"), "--size", "huge"])


COFFEE = """\
language: en
lists:
  size:
    values: [small, medium, large]
  drink:
    values: [coffee, tea, {in: hot chocolate, out: cocoa}]
intents:
  order:
    data:
      - sentences:
          - "[a] {size} {drink} [please]"
          - "i (want|would like) a {size} {drink}"
          - "(give|get) me a {drink}"
          - "{drink} {size}"
  cancel:
    data:
      - sentences: ["cancel [my order]", "never mind", "stop [the order]"]
"""


def test_another_grammar_file(tmp_path, capsys):
    grammar = tmp_path / "coffee.yaml"
    grammar.write_text(COFFEE)
    out = tmp_path / "coffee"
    arguments = ["--out", str(out), "--grammar", str(grammar), "--engines", "espeak", "--size", "tiny"]
    assert synthetic_main(arguments) == 0
    labels = LabelSet.load(out / "manifests")
    assert labels.intents == ["order", "cancel"]
    assert labels.slots == {
        "size": ["small", "medium", "large", "none"],
        "drink": ["coffee", "tea", "cocoa", "none"],
    }
    train = read_manifest(out / "manifests" / "train.jsonl", labels)
    # a speaker never says one text twice: "cancel" has 5 texts for 6 train speakers, a few are dropped
    assert {u.intent for u in train} == {"order", "cancel"} and 50 <= len(train) <= 62
    assert all(u.slots == {"size": "none", "drink": "none"} for u in train if u.intent == "cancel")
    orders = [u for u in train if u.intent == "order"]
    assert {u.slots["drink"] for u in orders} == {"coffee", "tea", "cocoa"}  # every value covered
    assert all(("hot chocolate" in u.transcript) == (u.slots["drink"] == "cocoa") for u in orders)
    config = json.loads((out / "config.json").read_text())
    assert config["grammar"] == str(grammar)
    grammar.write_text(COFFEE.replace("{drink} {size}", "{drink} {flavour}"))  # an undefined list
    assert synthetic_main(arguments) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(grammar) in error and "flavour" in error
