"""The corpus recipes (FSC, SLURP, CSV): options, stage 0 on tiny fixture corpora, the shared
shell helpers. The whole pipeline through a recipe is tested in test_recipe_synthetic.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_fixtures import write_tone
from fsc_fixtures import make_fsc, write_split_csv

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def run_recipe(name: str, *args: str | os.PathLike, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = ["bash", str(RECIPES / name / "run.sh"), "--python", sys.executable, *map(str, args)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=cwd)


@pytest.mark.parametrize("name", ["synthetic", "fsc", "slurp", "csv"])
def test_help_lists_every_option_with_its_comment(name):
    result = subprocess.run(
        ["bash", str(RECIPES / name / "run.sh"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "--stage",
        "--stop-stage",
        "--ngpu",
        "--exp-dir",
        "--students",
        "--config",
        "--scratch-config",
        "--student-set",
        "--distill",
        "--snrs",
        "--noisy-utterances",
    ):
        assert option in result.stdout
    assert "last stage to run [7]" in result.stdout
    # the default student: a pretrained Whisper encoder (conf/whisper.yaml) in every recipe
    assert "conf/whisper.yaml" in result.stdout and "conf/student.yaml" in result.stdout


@pytest.mark.parametrize("name", ["synthetic", "fsc", "slurp", "csv"])
def test_unknown_option_and_missing_value_are_fatal(name):
    result = subprocess.run(["bash", str(RECIPES / name / "run.sh"), "--no-such-option", "1"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "unknown option --no-such-option" in result.stderr
    result = subprocess.run(
        ["bash", str(RECIPES / name / "run.sh"), "--stage"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "needs a value" in result.stderr


@pytest.mark.parametrize("name", ["fsc", "slurp"])
def test_stage_0_needs_the_corpus(name, tmp_path):
    result = run_recipe(name, "--stop-stage", "0", cwd=tmp_path)
    assert result.returncode == 1 and "stage 0 needs --corpus-dir" in result.stderr
    result = run_recipe(name, "--stop-stage", "0", "--corpus-dir", tmp_path / "nowhere", cwd=tmp_path)
    assert result.returncode == 1 and "no such folder" in result.stderr


def test_fsc_stage_0_original_and_challenge_split(tmp_path):
    root = tmp_path / "fluent_speech_commands_dataset"
    splits = make_fsc(root)
    result = run_recipe("fsc", "--corpus-dir", root, "--stop-stage", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifests = tmp_path / "data" / "fsc" / "manifests"
    assert sorted(p.name for p in manifests.glob("*.jsonl")) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    assert "done in" in result.stderr
    # the speaker challenge split: CSVs named speaker_{train,valid,test}_data.csv
    challenge = root / "data" / "challenge_splits"
    write_split_csv(challenge / "speaker_train_data.csv", splits["train"])
    write_split_csv(challenge / "speaker_valid_data.csv", splits["test"])
    write_split_csv(challenge / "speaker_test_data.csv", splits["valid"])
    result = run_recipe("fsc", "--corpus-dir", root, "--split", "speaker", "--stop-stage", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    test = tmp_path / "data" / "fsc_speaker" / "manifests" / "test.jsonl"
    assert len(test.read_text().splitlines()) == len(splits["valid"])
    result = run_recipe("fsc", "--corpus-dir", root, "--split", "gender", cwd=tmp_path)
    assert result.returncode == 1 and "--split must be original, speaker or utterance" in result.stderr


def test_csv_stage_0_and_the_split_list(tmp_path):
    rows = {
        "train": [("a1", "turn on the lights", "activate_lights"), ("a2", "lights off", "deactivate_lights")],
        "valid": [("b1", "switch the lights on", "activate_lights")],
        "test": [("c1", "kill the lights", "deactivate_lights")],
    }
    for split, items in rows.items():
        with open(tmp_path / f"{split}.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["audio", "transcript", "intent", "speaker"])
            for name, text, intent in items:
                write_tone(tmp_path / "audio" / f"{name}.wav", 0.5)
                writer.writerow([f"audio/{name}.wav", text, intent, name[0]])
    result = run_recipe(
        "csv", "--csv", "train=train.csv,valid=valid.csv,test=test.csv", "--name", "lights",
        "--stop-stage", "0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifests = tmp_path / "data" / "lights" / "manifests"
    labels = json.loads((manifests / "labels.json").read_text())
    assert labels["intents"] == ["activate_lights", "deactivate_lights"]
    assert len((manifests / "train.jsonl").read_text().splitlines()) == 2
    # the shared helper that lists a data folder's splits, train and valid first
    helper = f". {RECIPES / 'common.sh'}; manifest_splits {manifests}"
    listed = subprocess.run(["bash", "-c", helper], capture_output=True, text=True)
    assert listed.stdout.split() == ["train", "valid", "test"]
    result = run_recipe("csv", "--stop-stage", "0", cwd=tmp_path)
    assert result.returncode == 1 and "stage 0 needs --csv" in result.stderr


def run_step_twice(tmp_path: Path, *step: str) -> subprocess.CompletedProcess:
    """``run_step`` of recipes/common.sh on a command that counts its runs in ``runs.txt``."""
    script = (
        f'set -euo pipefail; . "{RECIPES / "common.sh"}"; cd "{tmp_path}"; '
        "run_step out.txt out.recipe.done "
        + " ".join(step)
        + ' -- sh -c "echo run >> runs.txt; cp in.txt out.txt" in.txt'
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True)


def test_run_step_skips_in_the_shell_until_a_setting_changes(tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "upstream.done").write_text("{}\n")
    step = ("--input", "upstream.done", "--setting", "'voices: 1'")

    def runs() -> int:
        return len((tmp_path / "runs.txt").read_text().splitlines())

    first = run_step_twice(tmp_path, *step)
    assert first.returncode == 0, first.stderr
    assert runs() == 1 and "running: " in first.stderr
    marker = (tmp_path / "out.recipe.done").read_text()
    assert "command: sh -c" in marker and "file: in.txt" in marker and "input: upstream.done" in marker
    assert "setting:voices: 1" in marker
    again = run_step_twice(tmp_path, *step)
    assert runs() == 1 and "done with these settings, skipping: out.txt" in again.stderr
    (tmp_path / "in.txt").write_text("b\n")  # a file the command line names
    run_step_twice(tmp_path, *step)
    assert runs() == 2 and (tmp_path / "out.txt").read_text() == "b\n"
    (tmp_path / "upstream.done").write_text('{"seed": 1}\n')  # an earlier stage redone
    run_step_twice(tmp_path, *step)
    assert runs() == 3
    run_step_twice(tmp_path, "--input", "upstream.done", "--setting", "'voices: 2'")  # another setting
    assert runs() == 4
    (tmp_path / "out.txt").unlink()  # the output is gone
    run_step_twice(tmp_path, "--input", "upstream.done", "--setting", "'voices: 2'")
    assert runs() == 5
    failing = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{RECIPES / "common.sh"}"; cd "{tmp_path}"; run_step missing.txt m.done -- true'],
        capture_output=True, text=True,
    )  # fmt: skip
    assert failing.returncode == 1 and "missing.txt is missing after: true" in failing.stderr
    assert not (tmp_path / "m.done").exists()


def test_run_step_does_not_hash_its_own_output(tmp_path):
    """A command that names its output file (``--out FILE``) skips on the second run: the output,
    absent on the first run, is not part of the step's settings."""
    (tmp_path / "in.txt").write_text("a\n")
    script = (
        f'set -euo pipefail; . "{RECIPES / "common.sh"}"; cd "{tmp_path}"; '
        'run_step out.txt out.recipe.done -- sh -c \'echo run >> runs.txt; cp "$0" "$1"\' in.txt out.txt'
    )
    for _ in range(2):
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["run"]
    assert "skipping: out.txt" in result.stderr
    assert "file: in.txt" in (tmp_path / "out.recipe.done").read_text()
