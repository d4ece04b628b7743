"""The grammar recipe (`make run`'s) at size tiny on the FSC grammar file, end to end (stages 0-8):
the corpus from the grammar with recordings of one's own added by --eval-csv, the
Whisper-initialised students (CE only and distilled), the distilled from-scratch baseline, the
cascades, evaluation, report and the int8 ONNX export; and its reruns: a finished step is skipped
in the shell, without starting Python. (It replaces the test of recipes/synthetic/run.sh, whose
stages it shares.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_fixtures import write_tone

from data_prep.synthetic.engines import EngineUnavailable, PiperEngine

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "grammar" / "run.sh"
CONFIG = RECIPE.parent / "conf" / "whisper.yaml"
GRAMMAR = RECIPE.parent / "conf" / "fsc.yaml"
try:
    PiperEngine.check()
    HAS_PIPER = True
except EngineUnavailable:
    HAS_PIPER = False
# piper, the default held-out engine, gives the test_unseen_engine split when it is installed
EVAL_SPLITS = ("test", "test_unseen_phrasing", *(("test_unseen_engine",) if HAS_PIPER else ()))
SPLITS = ("train", "valid", *EVAL_SPLITS)
OOD_SPLITS = ("ood_train", "ood_valid", "ood_test")  # the out-of-domain corpus (data_prep.ood)
RECORDED = "real"  # the --eval-csv split: recordings without transcripts (tones here), students only
# Two epochs per student and small cascade subsets keep the test in minutes; everything else is
# the default recipe. The override names the students' folders (student_ce_train.epochs2), so
# runs never collide.
# Outlier exposure on (not the default): the longer path, whose every file the test checks.
QUICK = ("--student-set", "train.epochs=2", "--engines", "espeak,piper", "--noisy-utterances", "8",
         "--outlier-exposure", "true")  # fmt: skip
QUICK_ENVIRONMENT = {"CASCADE_UTTERANCES": "8", "CASCADE_NOISY_UTTERANCES": "2", "ASR_TRAIN_UTTERANCES": "16"}
# the main student CE only and distilled (whisper), the distilled from-scratch baseline (transformer),
# all three on train + train_rest; the main student distilled on train alone (the held-out phrasings)
STUDENTS = ("student_ce_train.epochs2", "student_kd_train.epochs2", "student_kd_scratch_train.epochs2",
            "student_kd_held_out_train.epochs2")  # fmt: skip
FAMILIES = ("whisper", "whisper", "transformer", "whisper")
CASCADES = ("cascade", "cascade_asr_teacher")
MODELS = ("teacher", *STUDENTS, *CASCADES)
MAIN = STUDENTS[1]  # student_kd: the model stage 8 exports
SKIPPED = "done with these settings, skipping"


def write_counting_python(folder: Path) -> Path:
    """An interpreter that appends a line to ``calls.log`` each time it starts, then runs Python."""
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\necho "$*" >> "{folder / "calls.log"}"\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return shim


def python_calls(root: Path) -> int:
    log = root / "bin" / "calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def snapshot(root: Path) -> Path:
    """A copy of the recipes and the code that the runs below use: the markers hash the sources,
    so an edit elsewhere in the tree between two runs (others at work) must not reach them."""
    checkout = root / "checkout"
    if not checkout.is_dir():
        for name in ("recipes", "pipeline", "data_prep"):
            shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    return checkout


def write_recordings(root: Path) -> Path:
    """Three 'recordings' (tones) of FSC commands, without transcripts: ``root/recordings.csv``."""
    for name, seconds in (("a.wav", 1.0), ("b.wav", 1.3), ("c.wav", 0.8)):
        write_tone(root / "recordings" / name, seconds)
    table = root / "recordings" / "recordings.csv"
    table.write_text("audio,intent,slot:action,slot:object,slot:location\n"
                     "a.wav,activate_lights_kitchen,activate,lights,kitchen\n"
                     "b.wav,bring_socks_none,bring,socks,\n"
                     "c.wav,increase_volume_none,increase,volume,none\n")  # fmt: skip
    return table


def run_recipe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    checkout = snapshot(tmp_path)
    environment = {**os.environ, **QUICK_ENVIRONMENT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(checkout)}  # fmt: skip
    (tmp_path / "bin").mkdir(exist_ok=True)
    python = write_counting_python(tmp_path / "bin")
    table = tmp_path / "recordings" / "recordings.csv"
    if not table.is_file():
        write_recordings(tmp_path)
    command = ["bash", str(checkout / "recipes" / "grammar" / "run.sh"), "--size", "tiny",
               "--grammar", str(checkout / "recipes" / "grammar" / "conf" / "fsc.yaml"),
               "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"),
               "--eval-csv", f"{RECORDED}={table}", "--export-utterances", "4",
               "--python", str(python), "--device", "cpu", *QUICK, *args]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=2400, env=environment, cwd=checkout
    )


def stages_run(stderr: str) -> list[int]:
    return [stage for stage in range(9) if f"Stage {stage}:" in stderr]


def rejection_of(model: Path) -> dict:
    return json.loads((model / "config.json").read_text())["rejection"]


def eval_files(exp: Path) -> list[Path]:
    recorded = [exp / model / "eval" / f"{RECORDED}.json" for model in STUDENTS]
    return [exp / model / "eval" / f"{split}.json" for model in MODELS for split in EVAL_SPLITS] + recorded


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    result = run_recipe(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_every_stage_writes_its_files(finished):
    root, result = finished
    corpus, exp = root / "data", root / "exp"
    for split in (*SPLITS, RECORDED, "train_rest"):
        assert (corpus / "manifests" / f"{split}.jsonl").is_file()
    assert json.loads((corpus / "config.json").read_text())["grammar"].endswith(
        "recipes/grammar/conf/fsc.yaml"
    )
    # stage 0 also makes what is not a command; stages 1-8 read the corpus with it (outlier exposure on)
    data = corpus / "openset"
    for split in (*SPLITS, RECORDED, *OOD_SPLITS):
        assert (data / "manifests" / f"{split}.jsonl").is_file(), split
    train = [json.loads(line) for line in (data / "manifests" / "train.jsonl").read_text().splitlines()]
    assert {row.get("ood_kind") for row in train if row["intent"] == "unknown"} == {
        "other_domain", "generic", "near_miss", "non_speech"}  # fmt: skip
    full = data / "full"  # the students' training folder: train + train_rest
    for split in ("train", "valid"):  # what the from-scratch student trains on; evaluation reads audio
        for name in (".done", "meta.json", "index.json", "frames.f16"):
            assert (full / "fbank" / split / name).is_file()
    assert sorted(path.name for path in (full / "fbank").iterdir() if not path.name.startswith("frozen_")) == [
        "train", "valid"]  # fmt: skip
    assert not (data / "fbank" / "train" / ".done").exists()
    for name in ("labels.json", "stats.json"):
        assert (corpus / "manifests" / name).is_file()
    labels = json.loads((data / "manifests" / "labels.json").read_text())
    assert len(labels["intents"]) == 32 and labels["intents"][-1] == "unknown"
    assert all("none" in values for values in labels["slots"].values())
    for name in (".done", "model.safetensors", "config.json", "metrics.json", "labels.json", "train_log.csv"):
        assert (exp / "teacher" / name).is_file(), name
    assert (exp / "teacher" / "targets" / ".done").is_file()
    # 4 epochs of 4 steps at tiny: far above chance (1/31), not converged; valid is half held-out phrasings
    teacher_scores = json.loads((exp / "teacher" / "metrics.json").read_text())["splits"]
    assert teacher_scores["train"]["accuracy"] >= 0.5 and teacher_scores["valid"]["accuracy"] >= 0.25, (
        teacher_scores
    )
    for student, family in zip(STUDENTS, FAMILIES, strict=True):
        for name in (
            ".done",
            "model.safetensors",
            "config.json",
            "metrics.json",
            "labels.json",
            "train_log.csv",
        ):
            assert (exp / student / name).is_file(), f"{student}/{name}"
        assert json.loads((exp / student / "config.json").read_text())["family"] == family, student
    losses = {
        student: json.loads((exp / student / "metrics.json").read_text())["losses"] for student in STUDENTS
    }
    # the corpus has slots: every student has slot heads (slot_ce); no logits loss, so no slot KD
    distilled = ["ce", "hidden", "attention", "slot_ce"]
    assert losses == {STUDENTS[0]: ["ce", "slot_ce"], STUDENTS[1]: distilled, STUDENTS[2]: distilled,
                      STUDENTS[3]: distilled}  # fmt: skip
    # the whisper twins share one frozen-encoder cache beside the feature stores; the student of
    # train alone has its own beside the corpus's
    assert len(list((full / "fbank").glob("frozen_whisper_*/train/.done"))) == 1
    assert len(list((data / "fbank").glob("frozen_whisper_*/train/.done"))) == 1
    # train + train_rest: every expression of the grammar; train_rest is never evaluated
    rest = (corpus / "manifests" / "train_rest.jsonl").read_text().splitlines()
    assert rest and all(json.loads(line)["phrasing"] == "unseen" for line in rest)
    assert len((full / "manifests" / "train.jsonl").read_text().splitlines()) == len(train) + len(rest)
    trained = {
        s: json.loads((exp / s / "metrics.json").read_text())["held_out_phrasings_trained"] for s in STUDENTS
    }
    assert trained == {**dict.fromkeys(STUDENTS[:3], len(rest)), STUDENTS[3]: 0}
    assert not list(exp.glob("*/eval/train_rest.json"))
    for path in eval_files(exp):
        evaluation = json.loads(path.read_text())
        assert 0 <= evaluation["metrics"]["accuracy"] <= 1, path
    # the open-set evaluation: the teacher on text, every student, the first cascade
    for model in ("teacher", *STUDENTS, CASCADES[0]):
        open_set = json.loads((exp / model / "eval" / "ood_test.json").read_text())
        assert open_set["format"] == "slukd-open-set" and 0 <= open_set["metrics"]["energy"]["auroc"] <= 1
    assert not (exp / CASCADES[1] / "eval" / "ood_test.json").exists()
    assert not (exp / STUDENTS[0] / "eval" / "ood_train.json").exists()
    # the recordings: evaluated (students only: no transcripts for the teacher or the cascades' WER)
    recorded = json.loads((exp / MAIN / "eval" / f"{RECORDED}.json").read_text())
    assert recorded["metrics"]["teacher_agreement"] is None and len(recorded["predictions"]["ids"]) == 3
    for model in ("teacher", *CASCADES):
        assert not (exp / model / "eval" / f"{RECORDED}.json").exists(), model
    assert f"{RECORDED}: audio-only lines, the students only" in result.stderr
    # stage 8: the main student as int8 ONNX, checked against PyTorch
    sidecar = json.loads((exp / MAIN / "model.int8.onnx.json").read_text())
    assert (exp / MAIN / "model.int8.onnx").is_file() and sidecar["verification"]["files"] == 4, sidecar
    assert f"deployable model: {exp / MAIN}/model.int8.onnx" in result.stderr
    # every student calibrated on valid, and the export carries its threshold
    for student in STUDENTS:
        rejection = json.loads((exp / student / "config.json").read_text())["rejection"]
        assert rejection["calibration"]["split"] == "valid" and rejection["target_acceptance"] == 0.98
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(exp / MAIN / "model.int8.onnx")).metadata_props}
    assert json.loads(metadata["slukd_rejection"])["threshold"] == rejection_of(exp / MAIN)["threshold"]
    conditions = {("clean", None), ("reverb", None), ("telephone", None)} | {
        (noise, snr) for noise in ("white", "babble") for snr in (0, 10, 20)
    }  # the recipe's sweep: white and babble at 20, 10, 0 dB, reverberation, a telephone channel
    for model in (*STUDENTS, *CASCADES):
        evaluation = json.loads((exp / model / "eval" / "test.json").read_text())
        assert {(row["noise"], row["snr_db"]) for row in evaluation["noise_sweep"]} == conditions, model
        assert evaluation["speed"] is not None, model  # speed on test only
        assert json.loads((exp / model / "eval" / "test_unseen_phrasing.json").read_text())["speed"] is None
    subset = json.loads((exp / STUDENTS[1] / "eval" / "test.json").read_text())["data"]["subset"]
    assert subset["noisy_utterances"] == 8, subset  # the students' noise sweep on a seeded subset
    cascade = json.loads((exp / "cascade" / "eval" / "test.json").read_text())["data"]["subset"]
    assert (cascade["utterances"], cascade["noisy_utterances"]) == (8, 2), cascade
    assert json.loads((exp / "teacher" / "eval" / "test.json").read_text())["noise_sweep"] is None
    report = exp / "report"
    for name in ("report.md", "report.html", "metrics.json"):
        assert (report / name).is_file(), name
    assert list(report.glob("*.png"))
    markdown = (report / "report.md").read_text()
    for model in MODELS:
        assert model in markdown, model
    assert (
        f"Trained on every expression of the grammar (train + train_rest): {', '.join(sorted(STUDENTS[:3]))}"
        in markdown
    )
    assert f"Phrasings never taught: {STUDENTS[3]} (train alone)" in markdown
    assert "AUROC" in markdown  # the open-set section
    assert "End-to-end vs cascade" in markdown
    assert stages_run(result.stderr) == list(range(9))
    for stage in range(9):
        assert f"Stage {stage} (" in result.stderr and " s\n" in result.stderr  # each stage's time
    assert f"report: {exp}/report/report.md" in result.stderr
    assert "done in" in result.stderr


def test_second_run_skips_every_step_in_the_shell(finished):
    root, _ = finished
    exp = root / "exp"
    stamps = {path: path.stat().st_mtime_ns for path in eval_files(exp)}
    calls = python_calls(root)
    start = time.monotonic()
    result = run_recipe(root)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert python_calls(root) == calls, "a finished step started Python"
    assert "running: " not in result.stderr
    # stage 0 (+ the recordings, the out-of-domain corpus and the mix), the train and valid stores, teacher, targets, 3 students and their
    # calibrations, 4 cascade
    # steps (2 cascade dirs, the ASR transcripts, the ASR-robust teacher), the teacher on every eval
    # split in one step and the students (recordings included) in another, the cascades split by
    # split (not on the recordings; the first cascade on ood_test), report, export
    # (+ the students' training folder, train + train_rest)
    steps = 2 + 2 + 1 + 2 + 2 + 2 * len(STUDENTS) + 4 + 2 + len(CASCADES) * len(EVAL_SPLITS) + 1 + 1 + 1
    assert result.stderr.count(SKIPPED) == steps
    assert stages_run(result.stderr) == list(range(9))
    assert {path: path.stat().st_mtime_ns for path in eval_files(exp)} == stamps
    assert seconds < 15, f"a rerun of the finished recipe took {seconds:.1f} s"
    marker = (exp / STUDENTS[0] / ".recipe.done").read_text()
    assert "command: " in marker and "conf/whisper.yaml " in marker and "input: " in marker
    marker = (exp / STUDENTS[2] / ".recipe.done").read_text()
    assert "conf/student.yaml " in marker and "teacher/targets/.done" in marker


def test_stages_4_to_5_skip_in_the_shell(finished):
    root, _ = finished
    result = run_recipe(root, "--stage", "4", "--stop-stage", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert stages_run(result.stderr) == [4, 5]
    # each student's training and its calibration
    assert result.stderr.count(SKIPPED) == 2 * len(STUDENTS) and "running: " not in result.stderr
    assert "report:" not in result.stderr


def test_a_whisper_student_alone_needs_no_feature_store(finished):
    root, _ = finished
    result = run_recipe(root, "--stage", "1", "--stop-stage", "1", "--students", "ce,kd")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no fbank stores: no chosen student has the fbank front-end" in result.stderr
    # the training folder (train + train_rest) is there already: nothing else runs
    assert "running: " not in result.stderr and result.stderr.count(SKIPPED) == 1


def test_a_changed_config_file_reruns_its_stage(finished, tmp_path):
    root, _ = finished
    config = tmp_path / "whisper.yaml"  # named as the default, so the students' folders stay the same
    shutil.copy(CONFIG, config)
    first = run_recipe(root, "--stage", "4", "--stop-stage", "4", "--config", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_recipe(root, "--stage", "4", "--stop-stage", "4", "--config", str(config))
    assert again.stderr.count(SKIPPED) == 2 and "running: " not in again.stderr  # training, calibration
    config.write_text(config.read_text() + "# edited\n")
    calls = python_calls(root)
    edited = run_recipe(root, "--stage", "4", "--stop-stage", "4", "--config", str(config))
    assert edited.returncode == 0, edited.stderr[-3000:]
    # Python decides again about the training; the calibration's input (the trained model) is unchanged
    assert edited.stderr.count(SKIPPED) == 1 and python_calls(root) == calls + 1
    assert "student already trained with this config, skipping" in edited.stderr


def test_other_settings_train_into_their_own_folders(finished):
    root, _ = finished
    result = run_recipe(root, "--stage", "5", "--stop-stage", "5", "--distill", "logits=1.0",
                        "--students", "kd_scratch")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    kd = root / "exp" / "student_kd_scratch_train.epochs2_logits1.0"
    assert json.loads((kd / "metrics.json").read_text())["losses"] == [
        "ce",
        "logits",
        "slot_ce",
        "slot_logits",
    ]
    assert not (root / "exp" / "student_kd_train.epochs2_logits1.0").exists()  # not chosen
    assert (root / "exp" / STUDENTS[2] / ".done").is_file()  # the earlier run is untouched


def test_help_and_a_missing_grammar():
    result = subprocess.run(["bash", str(RECIPE), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "last stage to run [8]" in result.stdout
    for option in ("--grammar", "--size", "--data-dir", "--exp-dir", "--eval-csv", "--students", "--distill"):
        assert option in result.stdout, option
    assert f"[{GRAMMAR}]" in result.stdout  # the FSC grammar is the default
    result = subprocess.run(
        ["bash", str(RECIPE), "--grammar", "nowhere.yaml"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "--grammar: no such file: nowhere.yaml" in result.stderr


def test_unknown_student_is_fatal_before_any_stage():
    result = subprocess.run(["bash", str(RECIPE), "--students", "kd,teacher"], capture_output=True, text=True)
    assert result.returncode == 1 and "--students: unknown student 'teacher'" in result.stderr
    assert "Stage 0" not in result.stderr


def test_size_must_be_known():
    result = subprocess.run(["bash", str(RECIPE), "--size", "huge"], capture_output=True, text=True)
    assert result.returncode == 1 and "--size must be tiny, small or full" in result.stderr
