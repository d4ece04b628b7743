"""Training pretrained-encoder students (whisper, hf) through pipeline.training.train: the frozen-encoder
cache (same losses as without it, reused on rerun, refused where it cannot stand in), pretrained
weights loaded for a new student, and distillation with every loss on 50 Hz encoders."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from train_fixtures import (
    inputs_for,
    make_corpus,
    make_teacher_targets,
    save_tiny_wav2vec2,
    save_tiny_whisper,
)

from pipeline.core.config import ConfigError
from pipeline.frontends.feature_store import FeatureStoreError
from pipeline.serving.model_dir import load_model_dir
from pipeline.training.train import load_experiment_config, train_student

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("train_pretrained"))


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


def whisper_settings(folder, *extra: str) -> list[str]:
    return [
        "student.family=whisper", f"student.pretrained={folder}", "student.freeze=top:1", "train.device=cpu",
        "train.max_frames=3000", "train.warmup_steps=2", "train.patience=0", *extra,
    ]  # fmt: skip


def log_rows(run) -> list[dict]:
    with open(run / "train_log.csv") as stream:
        return list(csv.DictReader(stream))


def test_frozen_cache_gives_the_losses_of_the_full_forward_and_is_reused(
    corpus, whisper_dir, tmp_path, caplog
):
    cache_root = tmp_path / "cache"
    runs = {}
    for name, cache in (("direct", "false"), ("cached", "auto")):
        settings = whisper_settings(whisper_dir, "train.epochs=2", f"train.cache_frozen={cache}")
        runs[name] = train_student(
            inputs_for(corpus, frozen_cache=cache_root),
            tmp_path / name,
            load_experiment_config(None, settings),
        )
    caches = sorted(cache_root.iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("frozen_whisper_")
    assert sorted(p.name for p in caches[0].iterdir()) == ["train", "valid"]
    meta = json.loads((caches[0] / "train" / "meta.json").read_text())
    assert meta["num_utterances"] == 62 and meta["feature_dim"] == 16
    assert meta["inputs"] == "waveforms, trimmed"  # as the stores were built (trim_silence on by default)
    direct, cached = log_rows(tmp_path / "direct"), log_rows(tmp_path / "cached")
    for row_direct, row_cached in zip(direct, cached, strict=True):
        for key in ("train_loss", "valid_loss"):
            assert float(row_cached[key]) == pytest.approx(float(row_direct[key]), rel=1e-3, abs=1e-4), key
    assert runs["cached"]["valid_accuracy"] == runs["direct"]["valid_accuracy"]

    # the model dir is the whole student: its forward on front-end features needs no cache
    loaded = load_model_dir(tmp_path / "cached")
    assert loaded.family == "whisper" and loaded.frontend.name == "whisper_logmel"
    waveforms = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert loaded.model(*loaded.frontend(waveforms, torch.tensor([16000, 9000]))).logits.shape == (2, 31)

    # another seed, same frozen bottom: the cache is reused, not rebuilt
    stamp = (caches[0] / "train" / "frames.f16").stat().st_mtime_ns
    settings = whisper_settings(whisper_dir, "train.epochs=1", "train.seed=3")
    with caplog.at_level("INFO"):
        train_student(
            inputs_for(corpus, frozen_cache=cache_root),
            tmp_path / "seed3",
            load_experiment_config(None, settings),
        )
    assert "encoder states up to date, reusing them" in caplog.text
    assert (caches[0] / "train" / "frames.f16").stat().st_mtime_ns == stamp
    assert len(list(cache_root.iterdir())) == 1


def test_cache_frozen_true_is_refused_where_no_cache_can_stand_in(corpus, whisper_dir, tmp_path):
    cases = {
        "student.freeze=none": "no frozen part \\(freeze: none\\)",
        "augment.noise_prob=0.5": "waveform augmentation is on",
        "augment.spec_augment=true": "feature augmentation",
    }
    for setting, message in cases.items():
        config = load_experiment_config(
            None, whisper_settings(whisper_dir, "train.cache_frozen=true", setting)
        )
        with pytest.raises(ConfigError, match=f"train.cache_frozen=true, but .*{message}"):
            train_student(inputs_for(corpus, frozen_cache=tmp_path / "cache"), tmp_path / "run", config)
    with pytest.raises(ConfigError, match="cache_frozen must be auto, true or false"):
        load_experiment_config(None, ["train.cache_frozen=sometimes"])


def test_hf_student_with_a_frozen_encoder_trains_on_its_cache(corpus, tmp_path, caplog):
    encoder = save_tiny_wav2vec2(tmp_path / "wav2vec2")
    settings = ["student.family=hf", f"student.pretrained={encoder}", "student.freeze=encoder",
                "student.extra_layers=1", "train.epochs=1", "train.device=cpu", "train.max_frames=3000"]  # fmt: skip
    with caplog.at_level("INFO"):
        metrics = train_student(inputs_for(corpus), tmp_path / "run", load_experiment_config(None, settings))
    assert "training on frozen encoder states" in caplog.text and 0 <= metrics["valid_accuracy"] <= 1
    (cache,) = (corpus / "fbank").glob("frozen_hf_*")  # beside the feature stores by default
    assert json.loads((cache / "valid" / "meta.json").read_text())["feature_dim"] == 32
    assert load_model_dir(tmp_path / "run").frontend.name == "waveform"


def test_layer_losses_need_trainable_student_layers(corpus, whisper_dir, tmp_path):
    settings = whisper_settings(
        whisper_dir, "student.freeze=encoder", "student.extra_layers=0", "distill.hidden=1"
    )
    with pytest.raises(
        ConfigError, match=r"the whisper student has none \(freeze: encoder, extra_layers: 0\)"
    ):
        train_student(inputs_for(corpus), tmp_path / "run", load_experiment_config(None, settings))


def test_a_new_student_loads_the_pretrained_weights_and_its_model_dir_needs_no_source(corpus, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from pipeline.students.registry import build_student, config_dict, new_student

    source = save_tiny_whisper(tmp_path / "whisper")
    pretrained = {name.removeprefix("model.encoder."): value
                  for name, value in load_file(str(source / "model.safetensors")).items()
                  if name.startswith("model.encoder.layers.")}  # fmt: skip
    assert len(pretrained) == 2 * 15  # 2 layers x 15 tensors (k_proj has no bias)
    # encoder fields already set (a config copied from a model dir): new_student still loads the weights
    resolved = config_dict(new_student("whisper", {"pretrained": str(source), "num_intents": 3}))
    student = new_student("whisper", resolved)
    assert all(torch.equal(student.encoder.state_dict()[name], value) for name, value in pretrained.items())
    rebuilt = build_student("whisper", resolved)  # build_student: the saved config alone, no weights read
    assert not torch.equal(rebuilt.encoder.layers[0].fc1.weight, student.encoder.layers[0].fc1.weight)

    settings = whisper_settings(source, "train.epochs=1", "train.train_fraction=0.2")
    train_student(inputs_for(corpus, frozen_cache=tmp_path / "cache"), tmp_path / "run",
                  load_experiment_config(None, settings))  # fmt: skip
    shutil.rmtree(source)
    loaded = load_model_dir(tmp_path / "run")
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    for name, value in pretrained.items():  # the frozen layer kept its pretrained weights
        if name.startswith("layers.0."):
            assert torch.equal(weights[f"encoder.{name}"], value), name
    assert loaded.config["student"]["d_model"] == 16 and loaded.config["student"]["encoder_layers"] == 2


def test_every_loss_on_a_50_hz_student_with_and_without_the_cache(
    corpus, whisper_dir, tmp_path_factory, tmp_path
):
    """Distillation onto a whisper student (frozen encoder, two extra layers: the layer map targets
    those), aligned by its 50 Hz output lengths; the cached run's loss terms equal the direct one's."""
    targets = make_teacher_targets(corpus, tmp_path_factory.mktemp("teacher"))
    losses = ["distill.logits=1", "distill.sentence=1", "distill.hidden=1", "distill.attention=1", "distill.ctc=0.3",
              "distill.alignment=interpolate", "student.freeze=encoder", "student.extra_layers=2", "train.epochs=1"]  # fmt: skip
    rows = {}
    for cache in ("false", "true"):
        settings = whisper_settings(whisper_dir, *losses, f"train.cache_frozen={cache}")
        inputs = inputs_for(corpus, teacher_targets=targets, frozen_cache=tmp_path / "cache")
        metrics = train_student(inputs, tmp_path / cache, load_experiment_config(None, settings))
        # the fine-tuned teacher has slot heads: slot_logits is on by default beside logits
        assert metrics["losses"] == [
            "ce",
            "logits",
            "sentence",
            "hidden",
            "attention",
            "ctc",
            "slot_ce",
            "slot_logits",
        ]
        (rows[cache],) = log_rows(tmp_path / cache)
    for loss in metrics["losses"]:
        direct, cached = float(rows["false"][f"train_{loss}"]), float(rows["true"][f"train_{loss}"])
        assert direct > 0 and cached == pytest.approx(direct, rel=1e-3, abs=1e-4), loss
    assert load_model_dir(tmp_path / "true").model.num_layers == 2


AUGMENT = ["augment.reverb_prob=0.5", "augment.noise_prob=0.5", "augment.noise_types=[white,babble]",
           "augment.telephone_prob=0.3", "augment.gain_prob=0.5", "augment.speed_perturb=true"]  # fmt: skip


def test_augmented_copies_extend_the_clean_cache_and_training_reads_them(
    corpus, whisper_dir, tmp_path, caplog
):
    """cache_augmented_copies=2 with waveform augmentation: the clean caches of a run without
    augmentation are reused as they are, two copies are added beside them (different from clean
    and from each other), a rerun reuses everything, and the run trains on the cache."""
    from pipeline.training.encoder_cache import AugmentedCopies, FrozenStates, version_of

    cache_root = tmp_path / "cache"
    inputs = inputs_for(corpus, frozen_cache=cache_root)
    train_student(
        inputs,
        tmp_path / "clean",
        load_experiment_config(None, whisper_settings(whisper_dir, "train.epochs=1")),
    )
    (root,) = cache_root.iterdir()
    clean_stamp = (root / "train" / "frames.f16").stat().st_mtime_ns
    done = json.loads((tmp_path / "clean" / ".done").read_text())
    assert "cache_augmented_copies" not in done["config"]["train"]  # N=0: the run's fingerprint as before

    settings = whisper_settings(whisper_dir, "train.epochs=3", "train.cache_augmented_copies=2", *AUGMENT)
    with caplog.at_level("INFO"):
        metrics = train_student(inputs, tmp_path / "robust", load_experiment_config(None, settings))
    assert "training on frozen encoder states" in caplog.text and "3 versions" in caplog.text
    assert [p.name for p in cache_root.iterdir()] == [root.name]  # the clean cache kept its name and bytes
    assert (root / "train" / "frames.f16").stat().st_mtime_ns == clean_stamp
    (augmented,) = root.glob("train_augmented_*")
    copies = [FrozenStates(augmented / f"copy_{k}") for k in (1, 2)]
    clean = FrozenStates(root / "train")
    differ = {0: 0, 1: 0, 2: 0}
    for utterance in clean.ids:
        states = [clean.frames_of(utterance), *(copy.frames_of(utterance) for copy in copies)]
        for pair, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
            differ[pair] += states[a].shape != states[b].shape or not (states[a] == states[b]).all()
    assert all(count >= len(clean.ids) * 0.8 for count in differ.values()), differ
    assert copies[0].meta["copy"] == 1 and copies[0].meta["augment"]["reverb_prob"] == 0.5
    rows = log_rows(tmp_path / "robust")
    assert len(rows) == 3 and all(float(row["train_loss"]) > 0 for row in rows)
    assert 0 <= metrics["valid_accuracy"] <= 1

    served = AugmentedCopies([clean, *copies], seed=0)
    served.set_epoch(2)
    utterance = clean.ids[0]
    expected = [clean, *copies][version_of(utterance, 2, 0, 3)].features(utterance)
    assert torch.equal(served.features(utterance), expected)

    # another seed with the same augmentation: nothing is rebuilt
    stamps = [(augmented / f"copy_{k}" / "frames.f16").stat().st_mtime_ns for k in (1, 2)]
    caplog.clear()
    settings = whisper_settings(
        whisper_dir, "train.epochs=1", "train.seed=4", "train.cache_augmented_copies=2", *AUGMENT
    )
    with caplog.at_level("INFO"):
        train_student(inputs, tmp_path / "robust_seed4", load_experiment_config(None, settings))
    assert caplog.text.count("up to date, reusing them") == 4  # train, valid, copy 1, copy 2
    assert [(augmented / f"copy_{k}" / "frames.f16").stat().st_mtime_ns for k in (1, 2)] == stamps


def test_augmented_copies_need_waveform_augmentation_and_a_cache(corpus, whisper_dir, tmp_path, caplog):
    inputs = inputs_for(corpus, frozen_cache=tmp_path / "cache")
    config = load_experiment_config(None, whisper_settings(whisper_dir, "train.cache_augmented_copies=1"))
    with pytest.raises(ConfigError, match="cache_augmented_copies=1, but no waveform augmentation is on"):
        train_student(inputs, tmp_path / "run", config)
    settings = whisper_settings(whisper_dir, "train.cache_augmented_copies=1", "train.cache_frozen=true",
                                "augment.spec_augment=true", *AUGMENT)  # fmt: skip
    with pytest.raises(ConfigError, match="train.cache_frozen=true, but feature augmentation"):
        train_student(inputs, tmp_path / "run", load_experiment_config(None, settings))
    with pytest.raises(ConfigError, match="cache_augmented_copies must be an integer >= 0"):
        load_experiment_config(None, ["train.cache_augmented_copies=-1"])
    # SpecAugment with auto: no cache, the copies are unused and augmentation runs on the fly
    settings = whisper_settings(whisper_dir, "train.cache_augmented_copies=1", "augment.spec_augment=true",
                                "augment.reverb_prob=0.5", "train.epochs=1", "train.train_fraction=0.2")  # fmt: skip
    with caplog.at_level("INFO"):
        train_student(inputs, tmp_path / "on_the_fly", load_experiment_config(None, settings))
    assert "cache_augmented_copies=1 is unused" in caplog.text
    assert "training on frozen encoder states" not in caplog.text and not (tmp_path / "cache").exists()


def test_a_whisper_student_needs_no_feature_store(corpus, whisper_dir, tmp_path, caplog):
    """Whisper's log-mel has no statistics: without stores it trains on waveforms, and its frozen
    cache is the one a run with (fbank) stores builds; the fbank transformer still needs a store."""
    no_stores = tmp_path / "no_fbank"
    inputs = inputs_for(corpus, train_features=no_stores / "train", valid_features=no_stores / "valid",
                        frozen_cache=tmp_path / "cache")  # fmt: skip
    settings = whisper_settings(whisper_dir, "train.epochs=1")
    with caplog.at_level("INFO"):
        metrics = train_student(inputs, tmp_path / "run", load_experiment_config(None, settings))
    assert "front-end whisper_logmel on the fly (no feature store" in caplog.text
    assert 0 <= metrics["valid_accuracy"] <= 1 and not no_stores.exists()
    caplog.clear()
    with caplog.at_level("INFO"):
        train_student(inputs_for(corpus, frozen_cache=tmp_path / "cache"), tmp_path / "with_stores",
                      load_experiment_config(None, settings))  # fmt: skip
    assert "encoder states up to date, reusing them" in caplog.text
    scratch = ["student.family=transformer", "train.device=cpu", "train.epochs=1"]
    with pytest.raises(
        FeatureStoreError, match=r"no_fbank/train: no finished feature store here \(run `slukd features`\)"
    ):
        train_student(inputs, tmp_path / "scratch", load_experiment_config(None, scratch))
