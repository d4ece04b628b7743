"""Distillation ablation: the same student and budget for every row, mean and spread over seeds.

    python benchmarks/distill.py --size small --seeds 0,1,2 [--epochs 20] [--config recipes/synthetic/conf/student.yaml]

Needs the recipe's stages 0-3 for that size (corpus, features, teacher, teacher targets):
`bash recipes/synthetic/run.sh --size small`. Rows: CE only (Jiang et al.'s Baseline-2),
CE + logits, CE + sentence, CE + hidden + attention (Jiang et al.'s STD), all losses, and the
CE-only / all-losses pair on 10% of the training data; plus the teacher on the gold transcripts.
Students are selected on the valid split only; test numbers are read once at the end.
Prints one table (accuracy in %, mean ± standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL_LOSSES = [
    "distill.logits=1.0",
    "distill.sentence=1.0",
    "distill.hidden=1.0",
    "distill.attention=1.0",
    "distill.ctc=0.3",
]
ROWS = {
    "CE only (Baseline-2)": [],
    "CE + logits": ["distill.logits=1.0"],
    "CE + sentence": ["distill.sentence=1.0"],
    "CE + hidden + attention (STD)": ["distill.hidden=1.0", "distill.attention=1.0"],
    "all losses": ALL_LOSSES,
    "CE only, 10% data": ["train.train_fraction=0.1"],
    "all losses, 10% data": ["train.train_fraction=0.1", *ALL_LOSSES],
}
TEST_SPLITS = ("test", "test_unseen_phrasing")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--config", type=Path, default=ROOT / "recipes/synthetic/conf/student.yaml")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--exp-root", type=Path, default=ROOT / "exp")
    parser.add_argument("--rows", default="", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--set", action="append", default=[], help="extra SECTION.KEY=VALUE for every row")
    args = parser.parse_args()

    from pipeline.logging_utils import setup_logging
    from pipeline.train import TrainInputs, evaluate_on_store, load_experiment_config, train_student

    setup_logging("WARNING")
    data = args.data_root / f"synthetic_{args.size}"
    exp = args.exp_root / f"synthetic_{args.size}"
    targets = exp / "teacher" / "targets"
    for needed in (data / "fbank" / "train" / ".done", targets / ".done"):
        if not needed.is_file():
            sys.exit(
                f"{needed.parent}: missing; run `bash recipes/synthetic/run.sh --size {args.size}` first"
            )
    inputs = TrainInputs(
        data / "manifests/train.jsonl",
        data / "manifests/valid.jsonl",
        data / "fbank/train",
        data / "fbank/valid",
        targets,
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [int(r) for r in args.rows.split(",")] if args.rows else list(range(len(ROWS)))
    results: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, list[float]] = {}
    teacher = json.loads((exp / "teacher" / "metrics.json").read_text())["splits"]
    for seed in seeds:  # every row once per seed, so a cut-short run still has whole rows
        for number, (name, overrides) in enumerate(ROWS.items()):
            if number not in chosen:
                continue
            settings = [f"train.epochs={args.epochs}", f"train.seed={seed}", *overrides, *args.set]
            config = load_experiment_config(args.config, settings)
            run_dir = exp / "bench_distill" / f"row{number}_seed{seed}"
            start = time.monotonic()
            metrics = train_student(inputs, run_dir, config)
            timing.setdefault(name, []).append(metrics.get("train_utterances_per_second", 0.0))
            scores = results.setdefault(name, {split: [] for split in ("valid", *TEST_SPLITS)})
            scores["valid"].append(100 * metrics["valid_accuracy"])
            for split in TEST_SPLITS:
                evaluation = evaluate_on_store(
                    run_dir, data / f"manifests/{split}.jsonl", data / f"fbank/{split}"
                )
                scores[split].append(100 * evaluation["accuracy"])
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in scores.items())
                  + f" [{time.monotonic() - start:.0f} s]", flush=True)  # fmt: skip
        print_table(args, results, timing, teacher, seeds[: seeds.index(seed) + 1])


def print_table(args, results, timing, teacher, seeds_done) -> None:  # noqa: ANN001
    print(
        f"\n{args.size} corpus, seeds {','.join(map(str, seeds_done))}, {args.epochs} epochs, config {args.config.name}"
    )
    print("| model | valid | test | test_unseen_phrasing | train utt/s |\n|---|---|---|---|---|")
    for name, scores in results.items():
        cells = [_mean_spread(scores[split]) for split in ("valid", *TEST_SPLITS)]
        print(f"| {name} | {' | '.join(cells)} | {statistics.mean(timing[name]):.0f} |")
    cells = [f"{100 * teacher[s]['accuracy']:.2f}" if s in teacher else "-" for s in ("valid", *TEST_SPLITS)]
    print(f"| teacher on gold transcripts | {' | '.join(cells)} | - |", flush=True)


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


if __name__ == "__main__":
    main()
