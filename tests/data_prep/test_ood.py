"""The out-of-domain corpus: each source, the non-speech sounds, the tiny corpus (espeak), the mix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.ood.__main__ import main as ood_main
from data_prep.ood.generate import OodConfig, OodError, grammar_sentences, prepare_ood
from data_prep.ood.mix import main as mix_main
from data_prep.ood.non_speech import HELD_OUT_SOUNDS, NON_SPEECH_SOUNDS, SEEN_SOUNDS, non_speech
from data_prep.ood.text_sources import (
    HOME_ASSISTANT_HELD_OUT,
    HOME_ASSISTANT_IN_DOMAIN,
    NEAR_MISS_VALUES,
    generic_texts,
    near_miss_texts,
    other_domain_texts,
)
from data_prep.synthetic.engines import EngineUnavailable, EspeakEngine
from pipeline.data.audio import SAMPLE_RATE, read_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Utterance, read_manifest, write_manifest
from pipeline.data.open_set import NO_SPEECH_TRANSCRIPT, OOD_KINDS, OOD_SPLITS, UNKNOWN_INTENT
from pipeline.data.text import normalize_transcript
from tests.corpus_fixtures import call_main, write_tone

IN_DOMAIN = grammar_sentences()


def sources(items):
    return {item.source for item in items}


def test_other_domain_keeps_the_domain_out_and_holds_out_whole_intents():
    pytest.importorskip("home_assistant_intents")
    seen, held = other_domain_texts()
    assert len(seen) > 200 and len(held) > 50
    intents = {s.split(":", 1)[1] for s in sources(seen + held) if s.startswith("home_assistant:")}
    assert not intents & set(HOME_ASSISTANT_IN_DOMAIN)
    assert {s.split(":", 1)[1] for s in sources(held) if s.startswith("home_assistant:")} <= set(
        HOME_ASSISTANT_HELD_OUT
    )
    assert not sources(seen) & sources(held)
    assert "home_assistant:HassGetCurrentTime" in sources(held)
    assert any(s.startswith("questions:") for s in sources(seen)) and any(
        s.startswith("chit_chat:") for s in sources(held)
    )
    assert all("{" not in item.text for item in seen + held)
    assert not {normalize_transcript(item.text) for item in seen + held} & {
        normalize_transcript(t) for t in IN_DOMAIN
    }


def test_generic_sentences_hold_out_topics():
    seen, held = generic_texts(seed=0)
    assert len(seen) > 100 and len(held) > 20
    assert not sources(seen) & sources(held)
    assert all(4 <= len(item.text.split()) <= 16 and item.kind == "generic" for item in seen + held)


def test_near_misses_are_never_in_domain_and_hold_out_their_vocabulary():
    seen, held = near_miss_texts(IN_DOMAIN, np.random.default_rng(0))
    in_domain = {normalize_transcript(text) for text in IN_DOMAIN}
    assert seen and held
    assert not {item.text for item in seen + held} & in_domain
    # from a few sentences, with every command forbidden (what a corpus's test splits may hold)
    few_seen, few_held = near_miss_texts(IN_DOMAIN[:40], np.random.default_rng(0), commands=IN_DOMAIN)
    assert few_seen + few_held and not {item.text for item in few_seen + few_held} & in_domain
    assert {item.source for item in seen} == {
        "near_miss:wrong_value",
        "near_miss:reordered",
        "near_miss:fragment",
    }
    held_values = {value for _, values in NEAR_MISS_VALUES.values() for value in values}
    seen_values = {value for values, _ in NEAR_MISS_VALUES.values() for value in values}
    wrong = [item.text.split() for item in seen if item.source == "near_miss:wrong_value"]
    assert all(set(words) & seen_values and not set(words) & held_values for words in wrong)
    wrong_held = [item.text.split() for item in held if item.source == "near_miss:wrong_value"]
    assert all(set(words) & held_values for words in wrong_held)


@pytest.mark.parametrize("sound", NON_SPEECH_SOUNDS)
def test_non_speech_sounds(sound):
    rng = np.random.default_rng(1)
    talkers = [np.sin(np.arange(16000) * 0.05 * (k + 1)).astype(np.float32) for k in range(8)]
    samples = non_speech(sound, rng, talkers)
    assert samples.dtype == np.float32 and 0.8 * SAMPLE_RATE <= len(samples) <= 4 * SAMPLE_RATE
    rms_db = 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert np.abs(samples).max() <= 1.0
    if sound == "silence":
        assert -80 < rms_db < -45
    else:
        assert -60 < rms_db < 0
    if sound.startswith("hum_"):
        spectrum = np.abs(np.fft.rfft(samples))
        peak = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()]
        assert abs(peak - float(sound[-2:])) < 2


def test_noise_colours_tilt_the_right_way():
    def low_share(sound):
        samples = non_speech(sound, np.random.default_rng(2))
        power = np.abs(np.fft.rfft(samples)) ** 2
        frequency = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
        return power[frequency < 1000].sum() / power.sum()

    shares = [low_share(sound) for sound in ("brown", "pink", "white", "blue")]
    assert shares == sorted(shares, reverse=True)
    assert set(HELD_OUT_SOUNDS) - set(SEEN_SOUNDS) == {"pink", "blue", "hum_60"}
    with pytest.raises(ValueError, match="unknown non-speech sound"):
        non_speech("thunder", np.random.default_rng(0))


@pytest.fixture(scope="module")
def ood_corpus(tmp_path_factory):
    pytest.importorskip("home_assistant_intents")
    try:
        EspeakEngine.check()
    except EngineUnavailable as error:
        pytest.skip(str(error))
    out = tmp_path_factory.mktemp("ood") / "tiny"
    code, log = call_main(ood_main, "--out", out, "--size", "tiny", "--engines", "espeak",
                          "--held-out-engine", "none", "--num-workers", "1")  # fmt: skip
    assert code == 0, log
    return out


def test_tiny_corpus_splits_kinds_and_held_out_parts(ood_corpus):
    labels = LabelSet.load(ood_corpus / "manifests/labels.json")
    assert labels.intents == [UNKNOWN_INTENT]
    manifests = {
        split: read_manifest(ood_corpus / f"manifests/{split}.jsonl", labels) for split in OOD_SPLITS
    }
    for split, manifest in manifests.items():
        kinds = [u.extra["ood_kind"] for u in manifest]
        assert {kind: kinds.count(kind) for kind in OOD_KINDS} == {
            kind: len(manifest) // 4 for kind in OOD_KINDS
        }
        assert all(u.extra["held_out"] == (split == "ood_test") for u in manifest)
        for utterance in manifest:
            samples, info = read_audio(manifest.audio_path(utterance))
            rate = info.sample_rate
            assert rate == SAMPLE_RATE and abs(len(samples) / rate - utterance.duration) < 0.01
            assert np.abs(samples).max() > 0
            if utterance.extra["ood_kind"] == "non_speech":
                assert utterance.transcript == NO_SPEECH_TRANSCRIPT and utterance.speaker == ""
    train_sources = {u.extra["ood_source"] for u in manifests["ood_train"]}
    test = manifests["ood_test"]
    test_text_sources = {
        u.extra["ood_source"] for u in test if u.extra["ood_kind"] in ("other_domain", "generic")
    }
    assert test_text_sources and not test_text_sources & train_sources
    assert {"non_speech:pink", "non_speech:blue", "non_speech:hum_60"} & {u.extra["ood_source"] for u in test}
    train_speakers = {u.speaker for u in manifests["ood_train"]} - {""}
    assert train_speakers and not train_speakers & ({u.speaker for u in test} - {""})
    train_texts = {u.transcript for u in manifests["ood_train"] if u.extra["ood_kind"] != "non_speech"}
    valid_texts = {u.transcript for u in manifests["ood_valid"] if u.extra["ood_kind"] != "non_speech"}
    assert not train_texts & valid_texts
    licenses = json.loads((ood_corpus / "config.json").read_text())["licenses"]
    assert "Apache-2.0" in licenses["other_domain"] and "PSF" in licenses["generic"]


def test_rerun_is_skipped_and_bad_size_is_one_line(ood_corpus, caplog):
    config = OodConfig(size="tiny", engines=["espeak"], held_out_engine="none", num_workers=1)
    with caplog.at_level("INFO"):
        prepare_ood(ood_corpus, config)
    assert "already generated" in caplog.text
    with pytest.raises(OodError, match="unknown size 'huge'"):
        prepare_ood(ood_corpus / "other", OodConfig(size="huge", engines=["espeak"]))


def test_mix_adds_unknown_to_train_and_valid(ood_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    labels = LabelSet(intents=["on", "off"])
    for split in ("train", "valid", "test"):
        utterances = [
            Utterance(f"{split}{i}", f"../audio/{split}{i}.wav", 1.0, SAMPLE_RATE, f"turn {name}", name)
            for i, name in enumerate(labels.intents)
        ]
        for utterance in utterances:
            write_tone(corpus / "audio" / f"{utterance.id}.wav", 1.0)
        write_manifest(corpus / "manifests" / f"{split}.jsonl", utterances)
    labels.save(corpus / "manifests/labels.json")
    out = tmp_path / "mixed"
    code, log = call_main(mix_main, "--corpus", corpus, "--ood", ood_corpus, "--out", out)
    assert code == 0, log
    mixed_labels = LabelSet.load(out / "manifests/labels.json")
    assert mixed_labels.intents == ["on", "off", UNKNOWN_INTENT]
    train = read_manifest(out / "manifests/train.jsonl", mixed_labels)
    ood_train = read_manifest(ood_corpus / "manifests/ood_train.jsonl")
    assert len(train) == 2 + len(ood_train)
    assert all(train.audio_path(u).is_file() for u in train)
    assert {u.intent for u in read_manifest(out / "manifests/test.jsonl")} == {"on", "off"}
    assert (out / "manifests/ood_test.jsonl").is_file()
    code, log = call_main(mix_main, "--corpus", out, "--ood", ood_corpus, "--out", tmp_path / "again")
    assert code == 1 and "already has the intent 'unknown'" in log and len(log.strip().splitlines()) == 1
    # --mix false (the grammar recipe's default): train, valid and the labels stay the corpus's; the
    # ood splits join, for the open-set evaluation only
    plain = tmp_path / "plain"
    code, log = call_main(mix_main, "--corpus", corpus, "--ood", ood_corpus, "--out", plain, "--mix", "false")
    assert code == 0, log
    assert LabelSet.load(plain / "manifests/labels.json").intents == ["on", "off"]
    assert len(read_manifest(plain / "manifests/train.jsonl")) == 2
    ood_test = read_manifest(plain / "manifests/ood_test.jsonl")
    assert len(ood_test) == len(read_manifest(ood_corpus / "manifests/ood_test.jsonl"))
    assert all(u.intent == UNKNOWN_INTENT and ood_test.audio_path(u).is_file() for u in ood_test)


def test_ood_test_alone_is_the_same_audio_and_mixes_without_outlier_exposure(ood_corpus, tmp_path):
    # Without outlier exposure the recipe synthesises ood_test only: the same utterances
    only = tmp_path / "only_test"
    code, log = call_main(ood_main, "--out", only, "--size", "tiny", "--engines", "espeak",
                          "--held-out-engine", "none", "--num-workers", "1", "--splits", "ood_test")  # fmt: skip
    assert code == 0, log
    assert sorted(p.name for p in (only / "manifests").glob("*.jsonl")) == ["ood_test.jsonl"]
    full, alone = (read_manifest(folder / "manifests/ood_test.jsonl") for folder in (ood_corpus, only))
    assert [u.id for u in alone] == [u.id for u in full] and [u.transcript for u in alone] == [
        u.transcript for u in full
    ]
    assert [(u.speaker, u.extra["ood_kind"], u.extra["ood_source"]) for u in alone] == [
        (u.speaker, u.extra["ood_kind"], u.extra["ood_source"]) for u in full
    ]
    for mine, theirs in zip(alone, full, strict=True):
        if mine.extra["ood_source"].startswith("non_speech:") and not mine.extra["ood_source"].endswith(
            "babble"
        ):
            # noise, hum, clicks: drawn from the utterance's place in the plan
            assert alone.audio_path(mine).read_bytes() == full.audio_path(theirs).read_bytes(), mine.id
        else:  # espeak's timing carries a little state from what its process spoke before
            assert abs(mine.duration - theirs.duration) < 0.02, mine.id
    corpus = tmp_path / "corpus"
    for split in ("train", "valid"):
        utterance = Utterance(f"{split}0", f"../audio/{split}0.wav", 1.0, SAMPLE_RATE, "turn on", "on")
        write_tone(corpus / "audio" / f"{split}0.wav", 1.0)
        write_manifest(corpus / "manifests" / f"{split}.jsonl", [utterance])
    LabelSet(intents=["on", "off"]).save(corpus / "manifests/labels.json")
    code, log = call_main(
        mix_main, "--corpus", corpus, "--ood", only, "--out", tmp_path / "plain", "--mix", "false"
    )
    assert code == 0, log
    assert (tmp_path / "plain" / "manifests" / "ood_test.jsonl").is_file()
    code, log = call_main(mix_main, "--corpus", corpus, "--ood", only, "--out", tmp_path / "mixed")
    assert code == 1 and "missing split(s) ood_train, ood_valid" in log
    with pytest.raises(OodError, match="splits must be some of"):
        prepare_ood(tmp_path / "bad", OodConfig(size="tiny", engines=["espeak"], splits=["ood_dev"]))
