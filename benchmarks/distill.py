"""Distillation ablation over student families: mean ± sd over seeds, selected on valid only.

    python benchmarks/distill.py --size small --seeds 0,1,2 \\
        [--rows whisper_ce,whisper_logits,...] [--whisper-epochs N] [--scratch-epochs N] \\
        [--robust-utterances 200] [--time-budget MIN] [--out benchmarks/results/distill_small.md]

Needs the recipe's stages 0-3 for that size (corpus, features, teacher, teacher targets):
`bash recipes/synthetic/run.sh --size small --stop-stage 3`. Rows (``--rows`` picks by key):

- ``whisper_ce``, ``whisper_logits``, ``whisper_sentence``, ``whisper_std``, ``whisper_all``:
  the Whisper student (``--whisper-config``: the packaged tiny.en encoder frozen, extra
  layer(s) on top) trained with CE only, CE + logits, CE + sentence, CE + hidden + attention
  (Jiang et al.'s STD), all losses;
- ``whisper_ce_10pct``, ``whisper_best_10pct``: the same student on a seeded 10% of the train
  utterances, CE only and with the distillation that scored best on valid (mean over seeds,
  then lower valid NLL) among the full-data distilled rows (``--best`` fixes it instead).
  ``--screen-seeds 0`` saves CPU time: every distilled row trains with seed 0, the best of
  them on valid is chosen there, and only it and CE train with the other seeds;
- ``scratch_ce``, ``scratch_std``: the from-scratch transformer (``--scratch-config``, Jiang et
  al.'s Baseline-2 and STD).

Columns: valid, test, test_unseen_phrasing, test_unseen_engine (the whole splits, clean), then
``test`` under white noise at 10 dB SNR, a reverberant room (RT60 0.3-0.6 s) and a telephone
channel, on a seeded subset of ``--robust-utterances`` test utterances (the noisy subset ``slukd
evaluate --noisy-utterances N`` takes; the same seeded noise per utterance), beside the same
subset clean. The scores come from :mod:`benchmarks.student_scoring` (``slukd evaluate``'s
numbers; a frozen encoder runs once per evaluation set for all students that share it). Every
run selects its checkpoint on valid only; the test splits are read once, at the end.

``--train-rows`` limits which rows may train (the others show their finished runs only), so a
benchmark can be run in parts within a time budget; ``--extra NAME=DIR`` scores a student that
the recipe trained as one more row. Training runs, scores and timing are kept under ``<exp>/bench_distill/<row>_<settings hash>/
seed<N>/``, so a rerun (or a run cut short by ``--time-budget``) only trains and scores what is
missing. Timing per row: ``train utt/s`` is the training throughput (utterances per second over
the epochs, validation included, from the run's metrics), ``wall s`` the whole run (model
build, frozen-encoder cache build or reuse, training) as measured here. Prints one table
(accuracy in %, mean ± sd over the seeds done) with the teacher on gold transcripts and, with
``--cascade``, the cascades next to the best student on the cascades' own utterances; then the
issues' goals, each met or not. ``--out`` writes the same text to a markdown file.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.seed_stats import correct_matrix, mean_spread, paired_cell, row_cell  # noqa: E402
from benchmarks.student_scoring import EvalSet, StudentScorer, evaluation_sets  # noqa: E402
from pipeline.augment.conditions import NoiseCondition  # noqa: E402
from pipeline.data.labels import LabelSet  # noqa: E402

logger = logging.getLogger("benchmarks.distill")

ALL_LOSSES = (
    "distill.logits=1.0",
    "distill.sentence=1.0",
    "distill.hidden=1.0",
    "distill.attention=1.0",
    "distill.ctc=0.3",
)
LOSS_SETS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "logits": ("distill.logits=1.0",),
    "sentence": ("distill.sentence=1.0",),
    "std": ("distill.hidden=1.0", "distill.attention=1.0"),
    "all": ALL_LOSSES,
}
LOSS_NAMES = {
    "ce": "CE only",
    "logits": "CE + logits",
    "sentence": "CE + sentence",
    "std": "CE + hidden + attention (STD)",
    "all": "all losses",
}
FAMILY_NAMES = {"whisper": "Whisper student", "transformer": "from-scratch transformer"}
BEST = "best"  # a row whose losses are the best distillation on valid


@dataclass(frozen=True)
class Row:
    """One line of the table: a student family, a loss set, a share of the training data."""

    key: str
    family: str  # whisper | transformer: which config and epochs
    losses: str  # a LOSS_SETS key, or BEST
    fraction: float = 1.0


ROWS = (
    Row("whisper_ce", "whisper", "ce"),
    Row("whisper_logits", "whisper", "logits"),
    Row("whisper_sentence", "whisper", "sentence"),
    Row("whisper_std", "whisper", "std"),
    Row("whisper_all", "whisper", "all"),
    Row("whisper_ce_10pct", "whisper", "ce", 0.1),
    Row("whisper_best_10pct", "whisper", BEST, 0.1),
    Row("scratch_ce", "transformer", "ce"),
    Row("scratch_std", "transformer", "std"),
)
DISTILLED = ("logits", "sentence", "std", "all")
CLEAN_SPLITS = ("valid", "test", "test_unseen_phrasing", "test_unseen_engine")
ROBUSTNESS_SPLIT = "test"

# The issues' goals (issue 12: pretrained students; issue 14: unseen engines, acoustics).
GOAL_CE = {"test": 97.0, "test_unseen_phrasing": 93.0, "test white_10dB": 85.0}
GOAL_DISTILLED = {"test": 98.5, "test_unseen_phrasing": 96.0, "test white_10dB": 88.0}
GOAL_TENTH = 85.0  # test accuracy on 10% of train
GOAL_TENTH_GAIN = 3.0  # distilled over CE, points
GOAL_ENGINE_GAP, GOAL_ENGINE = 3.0, 95.0  # test_unseen_engine within 3 points of test and >= 95
GOAL_ACOUSTIC_GAP = 5.0  # reverb and telephone within 5 points of clean


@dataclass
class RunResult:
    """One trained run: accuracy (%) per column, valid NLL, predictions, timing."""

    seed: int
    accuracy: dict[str, float]
    valid_nll: float
    predicted: dict[str, tuple[int, ...]]
    utterances_per_second: float
    wall_seconds: float | None  # None: trained elsewhere (an --extra model dir)
    command_acceptance: dict[str, float] = field(default_factory=dict)  # (%) per column, labels with slots


@dataclass
class RowResults:
    name: str
    runs: list[RunResult] = field(default_factory=list)

    def values(self, column: str) -> list[float]:
        return [run.accuracy[column] for run in self.runs if column in run.accuracy]

    def command_values(self, column: str) -> list[float]:
        return [run.command_acceptance[column] for run in self.runs if column in run.command_acceptance]

    def mean(self, column: str) -> float:
        values = self.values(column)
        return statistics.mean(values) if values else float("nan")

    def correct(self, eval_set: EvalSet, gold: np.ndarray) -> np.ndarray:
        """``[seeds, utterances]``: each run right or wrong on each utterance of the set."""
        return correct_matrix(
            [run.predicted[eval_set.name] for run in self.runs if eval_set.name in run.predicted], gold
        )


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class Context:
    """Everything the runs share."""

    args: argparse.Namespace
    data: Path  # the corpus: manifests/, fbank/
    bench: Path  # where the runs go
    scorer: StudentScorer
    labels: LabelSet
    train_utterances: int  # in the full train split
    started: float  # time.monotonic() at the start


def row_settings(row: Row, losses: str, args: argparse.Namespace) -> list[str]:
    """The config overrides of a row (without the seed)."""
    epochs = args.whisper_epochs if row.family == "whisper" else args.scratch_epochs
    if row.fraction < 1 and args.subset_epochs:
        epochs = args.subset_epochs
    settings = [f"train.epochs={epochs}"] if epochs else []
    if row.fraction < 1:
        settings.append(f"train.train_fraction={row.fraction}")
    return [*settings, *LOSS_SETS[losses], *args.set]


def row_name(row: Row, losses: str, train_utterances: int | None = None) -> str:
    name = f"{FAMILY_NAMES[row.family]}, {LOSS_NAMES[losses]}"
    if row.losses == BEST:
        name = f"{FAMILY_NAMES[row.family]}, best distillation on valid ({LOSS_NAMES[losses]})"
    if row.fraction < 1:
        share = f"{row.fraction:.0%} of train" + (f", {train_utterances} utt" if train_utterances else "")
        name += f", {share}"
    return name


def run_folder(context: Context, row: Row, losses: str, config_path: Path, settings: list[str]) -> Path:
    """``bench_distill/<key>[_<losses>]_<8 hex digits of the config file and settings>``."""
    digest = hashlib.sha256(config_path.read_bytes() + "\n".join(settings).encode()).hexdigest()[:8]
    key = row.key.replace(BEST, losses) if row.losses == BEST else row.key
    return context.bench / f"{key}_{digest}"


def train_and_score(context: Context, row: Row, losses: str, seed: int) -> RunResult | None:
    """Train one run (or find it trained), then score it on every column (or read its scores).
    None: a row outside ``--train-rows`` whose run is not trained."""
    from pipeline.core.io import is_done, read_json, write_json
    from pipeline.training.train import TrainInputs, load_experiment_config, train_student

    args, data = context.args, context.data
    config_path = args.whisper_config if row.family == "whisper" else args.scratch_config
    settings = row_settings(row, losses, args)
    run_dir = run_folder(context, row, losses, config_path, settings) / f"seed{seed}"
    config = load_experiment_config(config_path, [*settings, f"train.seed={seed}"])
    inputs = TrainInputs(
        data / "manifests/train.jsonl", data / "manifests/valid.jsonl", data / "fbank/train", data / "fbank/valid",
        args.targets,
        # a subset's frozen states go apart, so that they never replace the full train split's;
        # the rows on the same subset (fraction and seed) share them
        frozen_cache=context.bench / f"frozen_cache_{row.fraction:g}_seed{seed}" if row.fraction < 1 else None,
    )  # fmt: skip
    if row.key not in args.train_rows and not is_done(run_dir):
        return None
    timing_file = run_dir / "bench_timing.json"
    start = time.monotonic()
    metrics = train_student(inputs, run_dir, config)
    if not timing_file.is_file():  # trained just now (a finished run is found in well under a second)
        write_json(timing_file, {"wall_seconds": round(time.monotonic() - start, 2)})
    return scored_run(context, run_dir, seed, metrics, float(read_json(timing_file)["wall_seconds"]))


def scored_run(
    context: Context, run_dir: Path, seed: int, metrics: dict, wall_seconds: float | None
) -> RunResult:
    """A trained model dir's scores on every column (read back when already scored)."""
    scores = context.scorer.cached_score(run_dir, run_dir / "bench_scores.json")
    return RunResult(
        seed=seed,
        accuracy={name: 100 * score.accuracy for name, score in scores.items()},
        valid_nll=scores["valid"].nll,
        predicted={name: score.predicted for name, score in scores.items()},
        utterances_per_second=float(metrics.get("train_utterances_per_second", 0.0)),
        wall_seconds=wall_seconds,
        command_acceptance={name: 100 * score.command_acceptance for name, score in scores.items()
                            if score.command_acceptance is not None},
    )  # fmt: skip


def score_extra(context: Context, name: str, model_dir: Path, results: dict[str, RowResults]) -> None:
    """A student trained elsewhere (the recipe's), scored on the same columns: one run."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    experiment = json.loads((model_dir / "experiment.json").read_text())
    run = scored_run(context, model_dir, int(experiment["train"]["seed"]), metrics, None)
    results[name] = RowResults(f"{name} (`{model_dir}`, trained by the recipe)", [run])


def out_of_time(context: Context) -> bool:
    budget = context.args.time_budget
    return bool(budget) and time.monotonic() - context.started > 60 * budget


def run_rows(context: Context, rows: list[Row], losses_of: dict[str, str], seeds: list[int],
             results: dict[str, RowResults]) -> bool:  # fmt: skip
    """Every row once per seed (seeds outermost), so that a run cut short still has whole rows.
    Returns False when the time budget stopped it."""
    for seed in seeds:
        for row in rows:
            if out_of_time(context):
                logger.warning("time budget of %g min spent: %s seed %d and what follows not run",
                               context.args.time_budget, row.key, seed)  # fmt: skip
                return False
            losses = losses_of.get(row.key, row.losses)
            start = time.monotonic()
            result = train_and_score(context, row, losses, seed)
            if result is None:
                logger.info("%s seed %d: not trained and not in --train-rows, left out", row.key, seed)
                continue
            count = max(1, round(row.fraction * context.train_utterances))
            entry = results.setdefault(row.key, RowResults(row_name(row, losses, count)))
            entry.runs.append(result)
            cells = ", ".join(f"{name} {value:.2f}" for name, value in result.accuracy.items())
            logger.info("%s, seed %d: %s; %.0f utt/s, wall %.0f s (%.0f s in this call)", entry.name, seed, cells,
                        result.utterances_per_second, result.wall_seconds, time.monotonic() - start)  # fmt: skip
    return True


def best_distillation(results: dict[str, RowResults]) -> str | None:
    """The distilled Whisper loss set with the best mean valid accuracy (then the lower mean valid NLL)."""
    candidates = []
    for losses in DISTILLED:
        entry = results.get(f"whisper_{losses}")
        if entry and entry.runs:
            nll = statistics.mean(run.valid_nll for run in entry.runs)
            candidates.append((entry.mean("valid"), -nll, losses))
    return max(candidates)[2] if candidates else None


# ---------------------------------------------------------------------------------------------
# Tables


CONDITION_TITLES = {"white_10dB": "white 10 dB", "reverb_rt60_0.3-0.6": "reverb RT60 0.3-0.6 s"}


def column_title(eval_set: EvalSet) -> str:
    """``test``, or ``test subset: white 10 dB`` for a condition on the robustness subset."""
    if eval_set.name == eval_set.split:
        return eval_set.name
    condition = eval_set.condition.name
    return f"{eval_set.split} subset: {CONDITION_TITLES.get(condition, condition)}"


def gold_intents(sets: list[EvalSet], labels: LabelSet) -> dict[str, np.ndarray]:
    """Each set's gold intent indices, in its manifest order."""
    return {s.name: np.array([labels.index(u.intent) for u in s.manifest]) for s in sets}


def results_table(results: dict[str, RowResults], sets: list[EvalSet], teacher: dict,
                  gold: dict[str, np.ndarray]) -> str:  # fmt: skip
    """Rows x columns, mean ± sd over seeds [95% interval over seeds and utterances], then the
    teacher on gold transcripts; each column names its utterances. With slots, a command acceptance
    column (intent and every slot exact) on ``test`` (else the first set)."""
    command = next((s for s in sets if s.name == "test"), sets[0])
    commands = any(entry.command_values(command.name) for entry in results.values())
    header = ["row", "seeds", *(f"{column_title(s)} (n={len(s.manifest)})" for s in sets),
              *([f"command acceptance ({column_title(command)})"] if commands else []), "train utt/s",
              "wall s/run"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results.values():
        speed = statistics.mean(run.utterances_per_second for run in entry.runs)
        walls = [run.wall_seconds for run in entry.runs if run.wall_seconds is not None]
        cells = [entry.name, str(len(entry.runs)), *(row_cell(entry.correct(s, gold[s.name])) for s in sets),
                 *([mean_spread(entry.command_values(command.name))] if commands else []),
                 f"{speed:.0f}", f"{statistics.mean(walls):.0f}" if walls else "-"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if teacher:
        cells = [f"{100 * teacher[s.name]['accuracy']:.2f}" if s.name in teacher else "-" for s in sets]
        lines.append(
            "| teacher on gold transcripts | - | "
            + " | ".join(cells)
            + (" | -" if commands else "")
            + " | - | - |"
        )
    return "\n".join(lines)


def paired_table(results: dict[str, RowResults], sets: list[EvalSet], gold: dict[str, np.ndarray],
                 best: str | None) -> str:  # fmt: skip
    """Distilled vs CE and family vs family on the same utterances: A - B in points with its 95%
    interval over seeds and utterances; ahead or behind only where the interval excludes 0."""
    pairs = [(f"whisper_{best}", "whisper_ce"), ("whisper_best_10pct", "whisper_ce_10pct"),
             ("scratch_std", "scratch_ce"), ("whisper_ce", "scratch_ce")]  # fmt: skip
    header = ["A vs B", *(column_title(s) for s in sets if s.split != "valid")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for first, second in pairs:
        a, b = results.get(first), results.get(second)
        if not a or not b or not a.runs or not b.runs:
            continue
        cells = [paired_cell(a.correct(s, gold[s.name]), b.correct(s, gold[s.name]))[0] for s in sets
                 if s.split != "valid"]  # fmt: skip
        lines.append(f"| {a.name} vs {b.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def cascade_rows(cascade: Path, eval_set: EvalSet) -> tuple[list[str], list[bool]] | None:
    """The utterance ids a cascade's eval file scored under the set's condition, and whether each was right."""
    path = cascade / "eval" / f"{eval_set.split}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())["predictions"]
    condition = "clean" if eval_set.condition.name == "clean" else eval_set.condition.name
    predicted = record["conditions"].get(condition)
    if predicted is None:
        return None
    rows = [i for i, p in enumerate(predicted) if p is not None]
    return [record["ids"][i] for i in rows], [predicted[i] == record["gold"][i] for i in rows]


def cascade_table(cascades: list[Path], best: RowResults, sets: list[EvalSet], labels: LabelSet) -> str:
    """Each cascade against the best student, on the utterances that cascade was evaluated on."""
    header = ["split / condition", "model", "utterances", "cascade", best.name, "student - cascade"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for eval_set in sets:
        if eval_set.split == "valid" or eval_set.name.endswith("subset clean"):
            continue
        position = {u.id: i for i, u in enumerate(eval_set.manifest)}
        for cascade in cascades:
            scored = cascade_rows(cascade, eval_set)
            if scored is None:
                continue
            ids, correct = scored
            cascade_correct = np.array(correct, dtype=bool)[None, :]
            cascade_cell, comparison = row_cell(cascade_correct), "-"
            if all(i in position for i in ids):
                rows = [position[i] for i in ids]
                gold = np.array([labels.index(eval_set.manifest[r].intent) for r in rows])
                mine = correct_matrix(
                    [[run.predicted[eval_set.name][r] for r in rows] for run in best.runs], gold
                )
                student = row_cell(mine)
                comparison = paired_cell(mine, cascade_correct)[0]
            else:
                student = "- (not all of its utterances are in this subset)"
            lines.append(f"| {column_title(eval_set)} | {cascade.name} | {len(ids)} | {cascade_cell} | {student} "
                         f"| {comparison} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def goal(text: str, met: bool) -> str:
    return f"- {'met' if met else 'NOT met'}: {text}"


def goals(results: dict[str, RowResults], best: str | None) -> str:
    """The issues' goals against the measured means."""
    checks = []
    for key, targets, what in (("whisper_ce", GOAL_CE, "Whisper CE only"),
                               (f"whisper_{best}", GOAL_DISTILLED, "best distilled Whisper")):  # fmt: skip
        entry = results.get(key)
        if entry is None or not entry.runs:
            continue
        for column, target in targets.items():
            value = entry.mean(column)
            checks.append(goal(f"{what} {column} {value:.2f} >= {target:g}", value >= target))
    tenth_ce, tenth_kd = results.get("whisper_ce_10pct"), results.get("whisper_best_10pct")
    if tenth_ce and tenth_kd:
        ce, kd = tenth_ce.mean("test"), tenth_kd.mean("test")
        checks.append(goal(f"10% of train: CE test {ce:.2f} >= {GOAL_TENTH:g}", ce >= GOAL_TENTH))
        checks.append(goal(f"10% of train: distilled test {kd:.2f} >= CE + {GOAL_TENTH_GAIN:g} ({ce + GOAL_TENTH_GAIN:.2f})",
                           kd >= ce + GOAL_TENTH_GAIN))  # fmt: skip
    entry = results.get(f"whisper_{best}")
    if entry and entry.runs:
        test, engine = entry.mean("test"), entry.mean("test_unseen_engine")
        if engine == engine:  # not NaN: the split exists
            checks.append(goal(f"best distilled test_unseen_engine {engine:.2f} within {GOAL_ENGINE_GAP:g} of test "
                               f"{test:.2f} and >= {GOAL_ENGINE:g}", test - engine <= GOAL_ENGINE_GAP and engine >= GOAL_ENGINE))  # fmt: skip
        clean = entry.mean(f"{ROBUSTNESS_SPLIT} subset clean")
        for name in (f"{ROBUSTNESS_SPLIT} reverb_rt60_0.3-0.6", f"{ROBUSTNESS_SPLIT} telephone"):
            value = entry.mean(name)
            if value == value:
                checks.append(goal(f"best distilled {name} {value:.2f} within {GOAL_ACOUSTIC_GAP:g} of clean "
                                   f"{clean:.2f} (same utterances)", clean - value <= GOAL_ACOUSTIC_GAP))  # fmt: skip
    return "\n".join(checks)


# ---------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", default="small", help="corpus size: data/synthetic_<size>, exp/synthetic_<size>"
    )
    parser.add_argument("--data", type=Path, default=None, help="the corpus (default data/synthetic_<size>)")
    parser.add_argument(
        "--exp", type=Path, default=None, help="the experiment folder (default exp/synthetic_<size>)"
    )
    parser.add_argument("--teacher", type=Path, default=None, help="teacher dir (default <exp>/teacher)")
    parser.add_argument(
        "--targets", type=Path, default=None, help="teacher targets (default <teacher>/targets)"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rows", default=",".join(r.key for r in ROWS), help="comma-separated row keys")
    parser.add_argument(
        "--train-rows",
        default=None,
        help="rows that may train (default: --rows); the others show only their finished runs",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a student model dir trained elsewhere (the recipe's), scored as one more row",
    )
    parser.add_argument("--whisper-config", type=Path, default=ROOT / "recipes/synthetic/conf/whisper.yaml")
    parser.add_argument("--scratch-config", type=Path, default=ROOT / "recipes/synthetic/conf/student.yaml")
    parser.add_argument("--whisper-epochs", type=int, default=0, help="0: the config's")
    parser.add_argument("--scratch-epochs", type=int, default=0, help="0: the config's")
    parser.add_argument("--subset-epochs", type=int, default=0,
                        help="epochs of the 10%% rows (0: as the full rows); at 5 epochs, 10%% of `small` "
                        "is 45 steps, under the configs' warm-up")  # fmt: skip
    parser.add_argument(
        "--screen-seeds",
        default="",
        help="seeds that every distilled Whisper row trains with; the other seeds train only CE and the "
        "distillation best on valid over these (default: every row, every seed)",
    )
    parser.add_argument(
        "--best",
        choices=DISTILLED,
        default=None,
        help="the 10%% distilled row's losses (default: the best on valid among the distilled rows)",
    )
    parser.add_argument(
        "--robust-utterances",
        type=int,
        default=200,
        help="test utterances of the noisy conditions (seeded subset; 0: all)",
    )
    parser.add_argument(
        "--eval-seed", type=int, default=0, help="seeds the subset and the noise (slukd evaluate --seed)"
    )
    parser.add_argument(
        "--cascade",
        type=Path,
        action="append",
        default=[],
        help="a cascade dir with eval files, compared with the best student (repeatable)",
    )
    parser.add_argument(
        "--time-budget", type=float, default=0, help="minutes; no new run starts after (0: none)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], help="extra SECTION.KEY=VALUE for every row")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.data = args.data or ROOT / "data" / f"synthetic_{args.size}"
    args.exp = args.exp or ROOT / "exp" / f"synthetic_{args.size}"
    args.teacher = args.teacher or args.exp / "teacher"
    args.targets = args.targets or args.teacher / "targets"
    args.train_rows = {key.strip() for key in (args.train_rows or args.rows).split(",") if key.strip()}
    return args


def check_inputs(args: argparse.Namespace, rows: list[Row]) -> None:
    needed = [args.data / "fbank/train/.done", args.data / "fbank/valid/.done", args.targets / ".done"]
    needed += [path for path, family in ((args.whisper_config, "whisper"), (args.scratch_config, "transformer"))
               if any(r.family == family for r in rows)]  # fmt: skip
    for path in needed:
        if not path.exists():
            sys.exit(f"{path}: missing; run `bash recipes/synthetic/run.sh --size {args.size} --stop-stage 3` first"
                     if path.name == ".done" else f"{path}: config not found")  # fmt: skip


def header(args: argparse.Namespace, sets: list[EvalSet], seeds: list[int], minutes: float) -> str:
    from pipeline.core.environment import environment

    hardware = environment()["hardware"]
    robust = next((len(s.manifest) for s in sets if s.name.endswith("subset clean")), 0)
    epochs = (f"Whisper rows {args.whisper_config.name}" + (f" with {args.whisper_epochs} epochs" if args.whisper_epochs else "")
              + f", from-scratch rows {args.scratch_config.name}" + (f" with {args.scratch_epochs} epochs" if args.scratch_epochs else ""))  # fmt: skip
    if args.subset_epochs:
        epochs += f"; the 10% rows {args.subset_epochs} epochs"
    return (
        f"`python benchmarks/distill.py {' '.join(sys.argv[1:])}` on {datetime.date.today().isoformat()}, "
        f"{hardware['cpu']} ({hardware['cpu_count']} cores, {platform.system()}), {minutes:.1f} min.\n"
        f"Corpus {args.data.name}; seeds {','.join(map(str, seeds))}; configs: {epochs}. Accuracy in %, "
        f"mean ± sd over the seeds done [95% interval, seeds and utterances resampled]; n: the utterances of "
        f"each column; checkpoints and the best distillation selected on valid only, test numbers reported only. The noisy conditions run on "
        f"a seeded subset of {robust} test utterances (`slukd evaluate --seed {args.eval_seed} "
        f"--noisy-utterances {robust}`), compared with the same subset clean."
    )


def main() -> None:
    args = parse_args()
    from pipeline.core.devices import resolve_device
    from pipeline.core.logging_utils import setup_logging

    setup_logging("INFO")
    for name in ("pipeline", "pipeline.training.train", "pipeline.training.encoder_cache"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logger.info("command line: %s", " ".join(sys.argv))
    wanted = [key.strip() for key in args.rows.split(",") if key.strip()]
    known = {row.key: row for row in ROWS}
    unknown = [key for key in [*wanted, *args.train_rows] if key not in known]
    if unknown:
        sys.exit(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    rows = [row for row in ROWS if row.key in wanted]
    check_inputs(args, rows)
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = LabelSet.load(args.data / "manifests/labels.json")
    manifests = {split: args.data / f"manifests/{split}.jsonl" for split in CLEAN_SPLITS
                 if (args.data / f"manifests/{split}.jsonl").is_file()}  # fmt: skip
    conditions = [
        NoiseCondition("white", 10.0),
        NoiseCondition("reverb", rt60_s=(0.3, 0.6)),
        NoiseCondition("telephone"),
    ]
    sets = evaluation_sets(
        manifests, labels, conditions, ROBUSTNESS_SPLIT, args.robust_utterances, args.eval_seed
    )
    scorer = StudentScorer(sets, resolve_device(args.device), seed=args.eval_seed)
    train_count = sum(
        1 for line in (args.data / "manifests/train.jsonl").read_text().splitlines() if line.strip()
    )
    context = Context(
        args, args.data, args.exp / "bench_distill", scorer, labels, train_count, time.monotonic()
    )

    results: dict[str, RowResults] = {}
    full = [row for row in rows if row.family == "whisper" and row.fraction == 1]
    tenth = [row for row in rows if row.family == "whisper" and row.fraction < 1]
    scratch = [row for row in rows if row.family == "transformer"]
    screen = [int(s) for s in args.screen_seeds.split(",")] if args.screen_seeds else seeds
    finished = run_rows(context, full, {}, screen, results)
    best = args.best or best_distillation(results)
    if tenth and best is None:
        sys.exit("the 10% distilled row needs the distilled Whisper rows or --best")
    if finished and screen != seeds:  # the other seeds: CE and the chosen distillation only
        chosen = [row for row in full if row.losses in ("ce", best)]
        finished = run_rows(context, chosen, {}, [s for s in seeds if s not in screen], results)
    if finished:
        finished = run_rows(context, tenth, {"whisper_best_10pct": best}, seeds, results)
    if finished:
        run_rows(context, scratch, {}, seeds, results)
    for extra in args.extra:
        name, _, folder = extra.partition("=")
        score_extra(context, name, Path(folder), results)
    minutes = (time.monotonic() - context.started) / 60

    teacher_file = args.teacher / "metrics.json"
    teacher = json.loads(teacher_file.read_text()).get("splits", {}) if teacher_file.is_file() else {}
    gold = gold_intents(sets, labels)
    parts = [header(args, sets, seeds, minutes), results_table(results, sets, teacher, gold)]
    paired = paired_table(results, sets, gold, best)
    if paired:
        parts.append("Paired comparisons on the same utterances (A - B in points, 95% interval over seeds and "
                     "utterances; ahead or behind only where it excludes 0, level otherwise):\n\n" + paired)  # fmt: skip
    if best and f"whisper_{best}" in results:
        how = (
            "given by --best"
            if args.best
            else f"mean valid accuracy over seeds {','.join(map(str, screen))}, then valid NLL"
        )
        parts.append(f"Best distillation on valid ({how}): {LOSS_NAMES[best]}.")
    if args.cascade and best and f"whisper_{best}" in results:
        table = cascade_table(args.cascade, results[f"whisper_{best}"], sets, labels)
        if table:
            parts.append("End-to-end vs cascade, on the utterances each cascade was evaluated on "
                         "(its eval files; the student's accuracy on the same utterances):\n\n" + table)  # fmt: skip
    parts.append("Goals (issues 12 and 14):\n\n" + goals(results, best))
    if scorer.frozen_seconds >= 1:
        parts.append(
            f"Frozen encoder over the evaluation sets, once for all Whisper rows: {scorer.frozen_seconds:.0f} s."
        )
    text = "\n\n".join(parts) + "\n"
    print(text, flush=True)
    if args.out:
        from pipeline.core.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
