"""Does a larger pretrained encoder pay for its cost? The same frozen-encoder student per encoder.

    OMP_NUM_THREADS=1 python benchmarks/encoders.py --data /tmp/enc_data/tiny --work /tmp/enc_bench \\
        [--encoders packaged,packaged:whisper-base] [--config recipes/synthetic/conf/whisper.yaml] \\
        [--seeds 0] [--set train.epochs=5 ...] [--runs 100] [--out benchmarks/results/encoders_tiny.md]

``--data`` is a corpus folder with ``manifests/`` (``python -m data_prep.synthetic --size tiny
--out DIR``). Every encoder (a ``student.pretrained`` value: ``packaged`` is Whisper tiny.en,
``packaged:whisper-base`` Whisper base, or a CTranslate2/HF folder) trains the student of
``--config`` (by default the recipe's: the encoder frozen, one new transformer layer, attention
pooling, CE only) with only ``student.pretrained`` swapped, on the frozen-encoder cache
(``--work/frozen/<encoder>/``, built once per encoder). Per encoder the table gives:

- parameters: the whole student, and of them the trained ones (new layer and heads);
- valid / test / test_unseen_engine accuracy, % (correct/n), from
  :class:`benchmarks.student_scoring.StudentScorer` (``slukd evaluate``'s numbers, clean audio),
  mean over ``--seeds`` when there are several;
- cache s: the frozen-encoder cache build, train and valid splits (from the cache's meta.json;
  built once per encoder, shared by its seeds and settings);
  train s: the training epochs with validation (the run's ``train_seconds_this_run``);
- int8 ONNX latency: ``slukd export --int8`` of the first seed's model, timed by
  ``benchmarks/inference.py``'s own child process (batch 1, one thread, a 3.0 s command, median
  and p90 over ``--runs`` calls after 10 warm-up calls), its size and its test accuracy.

Runs, scores and exports are kept under ``--work`` and reused by a rerun; the timings of a run
are those of the run that trained it. Everything runs on one CPU thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one core, shared machine
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("benchmarks.encoders")

SPLITS = ("valid", "test", "test_unseen_engine")
DEFAULT_ENCODERS = "packaged,packaged:whisper-base"


@dataclass
class EncoderResult:
    """One encoder's runs (one per seed) and its int8 export's timing."""

    encoder: str
    parameters: int = 0
    trained_parameters: int = 0
    accuracy: dict[str, list[float]] = field(default_factory=dict)  # split -> % per seed
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (correct, n), first seed
    cache_seconds: list[float] = field(default_factory=list)
    reused_runs: int = 0  # runs an earlier invocation trained (their times are from then)
    train_seconds: list[float] = field(default_factory=list)
    int8: dict = field(default_factory=dict)  # benchmarks/inference.py's child result


def slug(encoder: str) -> str:
    """A folder name for an encoder spec."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("_") or "encoder"


def ensure_features(data: Path, work: Path) -> Path:
    """Feature stores of train and valid (the recipe's fbank; the Whisper student reads waveforms
    and checks the stores against the manifests) under ``work/fbank``."""
    from pipeline.frontends.fbank import FbankConfig
    from pipeline.frontends.feature_store import compute_feature_store

    for split in ("train", "valid"):
        compute_feature_store(data / "manifests" / f"{split}.jsonl", work / "fbank" / split, FbankConfig())
    return work / "fbank"


def cache_seconds(frozen_root: Path) -> float:
    """Seconds the encoder's frozen-encoder cache took to build, train + valid (from its meta.json;
    the most expensive when ``frozen_root`` holds several)."""
    folders = [folder for folder in frozen_root.glob("frozen_*") if (folder / "train/meta.json").is_file()]
    return max(
        (sum(float(json.loads((folder / split / "meta.json").read_text()).get("seconds", 0.0))
             for split in ("train", "valid") if (folder / split / "meta.json").is_file())
         for folder in folders),
        default=0.0,
    )  # fmt: skip


def train_run(args: argparse.Namespace, features: Path, encoder: str, seed: int) -> tuple[Path, dict]:
    """Train (or find) one run: its folder and timing (``train_seconds``, and ``cache_seconds`` of
    the encoder's frozen-encoder cache, built once per encoder by whichever run came first)."""
    from pipeline.core.config import to_dict
    from pipeline.core.io import read_json, write_json
    from pipeline.training.train import TrainInputs, load_experiment_config, train_student

    manifests = args.data / "manifests"
    frozen_root = args.work / "frozen" / slug(encoder)
    settings = [*args.set, f"student.pretrained={encoder}", "train.device=cpu"]
    # the folder is named by the resolved config (less the seed), so a comment edit keeps it
    resolved = to_dict(load_experiment_config(args.config, settings))
    resolved.get("train", {}).pop("seed", None)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:8]
    run_dir = args.work / "runs" / f"{slug(encoder)}_{digest}" / f"seed{seed}"
    settings.append(f"train.seed={seed}")
    config = load_experiment_config(args.config, settings)
    inputs = TrainInputs(
        manifests / "train.jsonl", manifests / "valid.jsonl", features / "train", features / "valid",
        None, frozen_cache=frozen_root,
    )  # fmt: skip
    timing_file = run_dir / "bench_timing.json"
    trained_before = timing_file.is_file()
    metrics = train_student(inputs, run_dir, config)
    if not trained_before:  # trained just now
        write_json(timing_file, {
            "train_seconds": float(metrics.get("train_seconds_this_run", 0.0)),
            "epochs": metrics.get("epochs"),
            "settings": settings,
        })  # fmt: skip
    timing = {**read_json(timing_file), "cache_seconds": round(cache_seconds(frozen_root), 2)}
    return run_dir, {**timing, "reused": trained_before}


def parameter_counts(model_dir: Path) -> tuple[int, int]:
    """(all parameters, trained parameters) of a student model dir."""
    from pipeline.serving.model_dir import load_model_dir

    model = load_model_dir(model_dir, "cpu").model
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trained


def int8_latency(args: argparse.Namespace, run_dir: Path, index: int) -> dict:
    """Export the run to int8 ONNX (once) and time it as ``benchmarks/inference.py`` does."""
    from benchmarks.inference import prepare_student, run_method

    # one folder per run: prepare_student reuses an export it finds there
    student = prepare_student(run_dir, index, args.work / "onnx" / run_dir.parent.name, ["onnx_int8"])
    options = argparse.Namespace(
        manifest=args.data / "manifests" / "test.jsonl", runs=args.runs, limit=0, cascade_limit=0
    )
    return run_method("onnx_int8", student.onnx_int8, options)


def measure(args: argparse.Namespace) -> list[EncoderResult]:
    """Train, score and time every encoder."""
    from benchmarks.student_scoring import StudentScorer, evaluation_sets
    from pipeline.data.labels import LabelSet

    manifests = args.data / "manifests"
    labels = LabelSet.load(manifests / "labels.json")
    present = {
        split: manifests / f"{split}.jsonl" for split in SPLITS if (manifests / f"{split}.jsonl").is_file()
    }
    sets = evaluation_sets(present, labels, [])
    scorer = StudentScorer(sets, "cpu")
    features = ensure_features(args.data, args.work)
    results = []
    for index, encoder in enumerate(args.encoders):
        result = EncoderResult(encoder)
        for seed in args.seeds:
            started = time.monotonic()
            run_dir, timing = train_run(args, features, encoder, seed)
            scores = scorer.cached_score(run_dir, run_dir / "bench_scores.json")
            for eval_set in sets:
                score = scores[eval_set.name]
                result.accuracy.setdefault(eval_set.name, []).append(100 * score.accuracy)
                if seed == args.seeds[0]:
                    n = len(eval_set.manifest)
                    result.counts[eval_set.name] = (round(score.accuracy * n), n)
            result.cache_seconds.append(timing["cache_seconds"])
            result.train_seconds.append(timing["train_seconds"])
            result.reused_runs += bool(timing["reused"])
            logger.info("%s seed %d: %s in %.0f s", encoder, seed,
                        {k: round(v[-1], 1) for k, v in result.accuracy.items()}, time.monotonic() - started)  # fmt: skip
            if seed == args.seeds[0]:
                result.parameters, result.trained_parameters = parameter_counts(run_dir)
                result.int8 = int8_latency(args, run_dir, index)
        results.append(result)
    return results


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def table(results: list[EncoderResult], seeds: list[int]) -> str:
    """The markdown table of the module docstring (the splits the corpus has)."""
    several = len(seeds) > 1
    splits = [split for split in SPLITS if results and split in results[0].counts]
    columns = ["encoder", "params (trained)", *(f"{s} acc %" for s in splits), "cache s", "train s",
               "int8 ms (p90)", "int8 MB", "int8 test acc %"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for result in results:
        cells = [
            f"`{result.encoder}`",
            f"{result.parameters / 1e6:.1f} M ({result.trained_parameters / 1e6:.2f} M)",
        ]
        for split in splits:
            correct, n = result.counts[split]
            text = f"{_mean(result.accuracy[split]):.1f} ({correct}/{n})"
            if several:
                spread = statistics.stdev(result.accuracy[split])
                text = f"{_mean(result.accuracy[split]):.1f} ± {spread:.1f} (n={n})"
            cells.append(text)
        int8 = result.int8
        cells += [
            f"{_mean(result.cache_seconds):.1f}",
            f"{_mean(result.train_seconds):.1f}",
            f"{int8['latency_ms']:.1f} ({int8['latency_p90_ms']:.1f})",
            f"{int8['size_bytes'] / 1e6:.1f}",
            f"{100 * int8['accuracy']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if several:
        lines.append(
            f"\nAccuracy: mean ± sd over seeds {', '.join(map(str, seeds))} (n utterances per split); "
            f"the int8 columns are seed {seeds[0]}'s model."
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, minutes: float, results: list[EncoderResult]) -> str:
    from pipeline.core.environment import environment

    command = "OMP_NUM_THREADS=1 python benchmarks/encoders.py " + " ".join(sys.argv[1:])
    reused = sum(result.reused_runs for result in results)
    total = len(results) * len(args.seeds)
    note = (
        f" {reused} of the {total} runs were trained by an earlier invocation with the same settings (found "
        "under --work): their cache and train times are from then, the minutes above are this invocation's."
        if reused
        else ""
    )
    hardware = (environment().get("hardware") or {}).get("cpu") or platform.processor() or platform.machine()
    return (
        f"# Pretrained encoders on `{args.data}`\n\n"
        f"{datetime.date.today().isoformat()}, `{command}`, {minutes:.1f} min on one CPU thread ({hardware}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end: shared, so times are inflated).\n"
        f"Student: `{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}` "
        f"with `student.pretrained` swapped{' and ' + ', '.join(args.set) if args.set else ''}; "
        f"seeds {', '.join(map(str, args.seeds))}. int8 latency: a 3.0 s command at batch 1, one thread, "
        f"{args.runs} calls.{note}\n"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="corpus folder holding manifests/")
    parser.add_argument("--work", type=Path, required=True, help="features, caches, runs and exports")
    parser.add_argument(
        "--encoders", default=DEFAULT_ENCODERS, help="comma-separated student.pretrained values"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "recipes/synthetic/conf/whisper.yaml",
                        help="the student's experiment config")  # fmt: skip
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--set", action="append", default=[], help="an extra KEY=VALUE config override")
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 int8 calls after the warm-up")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.config = args.config.resolve()
    if not (args.data / "manifests" / "train.jsonl").is_file():
        parser.error(
            f"{args.data}: no manifests/train.jsonl (python -m data_prep.synthetic --out {args.data})"
        )
    return args


def main() -> None:
    import torch

    from pipeline.core.errors import SlukdError
    from pipeline.core.io import atomic_write_text
    from pipeline.core.logging_utils import setup_logging

    args = parse_args()
    setup_logging("INFO")
    torch.set_num_threads(1)
    start = time.monotonic()
    try:
        results = measure(args)
    except SlukdError as error:
        raise SystemExit(f"benchmarks/encoders.py: {error.one_line()}") from None
    text = header(args, (time.monotonic() - start) / 60, results) + "\n" + table(results, args.seeds) + "\n"
    sys.stdout.write(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
