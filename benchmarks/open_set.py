"""Rejection compared: max-softmax, energy and an ``unknown`` intent trained with outlier exposure.

    python benchmarks/open_set.py [--work exp/bench_open_set] [--size small] [--ood-size small] \\
        [--engines espeak] [--student-config recipes/synthetic/conf/whisper.yaml] [--epochs N] \\
        [--no-distill] [--out benchmarks/results/open_set.md]

Builds what it needs under ``--work`` (each step skipped when done): the built-in corpus
(``data_prep.synthetic``), the out-of-domain corpus (``data_prep.ood``, near misses from the
corpus's train transcripts), the open-set corpus (``data_prep.ood.mix``: train and valid plus
``ood_train``/``ood_valid`` as ``unknown``), fbank stores, and then trains:

- ``teacher``, ``teacher_oe``: the text teacher (``conf/teacher.yaml``) on the corpus, and on the
  open-set corpus (outlier exposure on the text; non-speech rows read as ``no speech``);
- ``student``, ``student_oe``: the student (``--student-config``, CE only) on the corpus, and on the
  open-set corpus;
- ``student_oe_kd`` (unless ``--no-distill``): ``student_oe`` distilled from ``teacher_oe``'s logits
  (``distill.logits=1.0``), so that the teacher's rejection is taught too.

Every model is scored on the same data (:mod:`pipeline.evaluation.open_set`): in-domain = the
``test`` and ``test_unseen_phrasing`` splits, out-of-domain = ``ood_test`` (held-out sources,
voices, noise colours and hum); the threshold of each score keeps ``--acceptance`` (98%) of the
in-domain ``valid`` split (the teacher reads transcripts). One table row per model and score:
AUROC, FPR at 95% TPR, in-domain false rejections and rejection per out-of-domain kind at that
threshold. The default score is chosen by measurement: the students' score with the highest
AUROC (then the lowest FPR). ``--out`` writes the same markdown to a file.

The defaults (students on 25% of train, evaluation splits cut to 150 utterances) are what
``benchmarks/results/open_set_small.md`` ran: 40 min on the 2-core machine shared with other
jobs, most of it the two teachers and the frozen Whisper encoder; ``--size tiny --ood-size tiny``
runs in about 4 min but its students learn next to nothing (62 train utterances, 31 intents).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("benchmarks.open_set")

IN_DOMAIN_SPLITS = ("test", "test_unseen_phrasing")
KINDS = ("other_domain", "generic", "near_miss", "non_speech")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=ROOT / "exp/bench_open_set", help="where everything goes"
    )
    parser.add_argument("--size", default="small", help="size of the built-in corpus (tiny, small, full)")
    parser.add_argument("--ood-size", default="small", help="size of the out-of-domain corpus")
    parser.add_argument("--engines", default="espeak", help="TTS engines of both corpora")
    parser.add_argument("--student-config", type=Path, default=ROOT / "recipes/synthetic/conf/whisper.yaml")
    parser.add_argument("--teacher-config", type=Path, default=ROOT / "recipes/synthetic/conf/teacher.yaml")
    parser.add_argument("--epochs", type=int, default=0, help="student epochs (0: the config's)")
    parser.add_argument("--no-distill", action="store_true", help="leave out the distilled student_oe_kd")
    parser.add_argument(
        "--train-fraction", type=float, default=0.25, help="seeded share of train for the students (1: all)"
    )
    parser.add_argument("--max-utterances", type=int, default=150,
                        help="seeded subset of each in-domain evaluation split and of valid (0: all)")  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], help="extra SECTION.KEY=VALUE for every student"
    )
    parser.add_argument(
        "--acceptance", type=float, default=0.98, help="in-domain valid acceptance of thresholds"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--report-only", action="store_true", help="only print the tables of a finished run")
    return parser.parse_args(argv)


def build_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """The corpus and the open-set corpus (with fbank stores of train and valid)."""
    from data_prep.ood.generate import OodConfig, prepare_ood
    from data_prep.ood.mix import mix_open_set
    from data_prep.synthetic.generate import SyntheticConfig, prepare_synthetic
    from pipeline.core.io import file_sha256, is_done, mark_done
    from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store

    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    held_out = "piper" if "piper" in engines and len(engines) > 1 else "none"
    corpus, ood, mixed = args.work / "corpus", args.work / "ood", args.work / "mixed"
    prepare_synthetic(corpus, SyntheticConfig(size=args.size, engines=engines, held_out_engine=held_out))
    prepare_ood(ood, OodConfig(size=args.ood_size, engines=engines, held_out_engine=held_out,
                               in_domain=[str(corpus / "manifests/train.jsonl")]))  # fmt: skip
    sources = {
        str(path): file_sha256(path)
        for folder in (corpus, ood)
        for path in sorted(folder.glob("manifests/*"))
    }
    if not is_done(mixed, sources):
        mix_open_set(corpus, ood, mixed)
        mark_done(mixed, sources)
    options = ExtractionOptions(device=args.device, num_workers=0)
    for data in (corpus, mixed):
        for split in ("train", "valid"):
            compute_feature_store(data / f"manifests/{split}.jsonl", data / "fbank" / split, options=options)
    return corpus, mixed


def train_models(args: argparse.Namespace, corpus: Path, mixed: Path) -> dict[str, Path]:
    """The teachers and students (see the module docstring), each skipped when trained."""
    from pipeline.core.config import load_config
    from pipeline.teacher.targets import export_targets
    from pipeline.teacher.train import TeacherConfig, train_teacher
    from pipeline.training.train import TrainInputs, load_experiment_config, train_student

    models = args.work / "models"
    teacher_config = load_config(
        TeacherConfig, args.teacher_config, [f"device={args.device}"], section="teacher"
    )
    dirs = {}
    for name, data in (("teacher", corpus), ("teacher_oe", mixed)):
        manifests = {split: data / f"manifests/{split}.jsonl" for split in ("train", "valid")}
        train_teacher(manifests, models / name, teacher_config)
        dirs[name] = models / name
    settings = [f"train.device={args.device}", "student.num_intents=0"]
    settings += [f"train.epochs={args.epochs}"] if args.epochs else []
    settings += [f"train.train_fraction={args.train_fraction}"] if args.train_fraction < 1 else []
    settings += args.set
    runs = [("student", corpus, None, []), ("student_oe", mixed, None, [])]
    if not args.no_distill:
        targets = models / "teacher_oe_targets"
        export_targets(dirs["teacher_oe"], {s: mixed / f"manifests/{s}.jsonl" for s in ("train", "valid")},
                       targets, layers=[], device=args.device)  # fmt: skip
        runs.append(("student_oe_kd", mixed, targets, ["distill.logits=1.0"]))
    for name, data, targets, extra in runs:
        inputs = TrainInputs(data / "manifests/train.jsonl", data / "manifests/valid.jsonl", data / "fbank/train",
                             data / "fbank/valid", targets)  # fmt: skip
        train_student(inputs, models / name, load_experiment_config(args.student_config, [*settings, *extra]))
        dirs[name] = models / name
    return dirs


def evaluate_models(args: argparse.Namespace, mixed: Path, dirs: dict[str, Path]) -> dict[str, dict]:
    """Each model's open-set eval on ood_test (kept under ``--work/eval/<model>``; rerun each time)."""
    from pipeline.evaluation.open_set import evaluate_open_set

    return {
        name: evaluate_open_set(
            model,
            mixed,
            "ood_test",
            IN_DOMAIN_SPLITS,
            "valid",
            args.acceptance,
            args.device,
            args.work / "eval" / name,
            args.max_utterances,
        )  # fmt: skip
        for name, model in dirs.items()
    }


def _percent(value: float) -> str:
    return "–" if value != value else f"{100 * value:.1f}"


def results_table(results: dict[str, dict]) -> tuple[str, str, str]:
    """The markdown table (one row per model and score), the default score chosen on the students
    (as a sentence, and its name)."""
    header = ["model", "score", "AUROC", "FPR@95%TPR %", "in-domain false rej. %", "OOD rejected %",
              *[f"{kind} rej. %" for kind in KINDS]]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    candidates = []
    for name, result in results.items():
        for method, metrics in result["metrics"].items():
            by_kind = metrics["rejected_by_kind"]
            lines.append("| " + " | ".join([
                name, method, f"{metrics['auroc']:.4f}", _percent(metrics["fpr_at_95_tpr"]),
                _percent(metrics["in_domain_false_rejections"]), _percent(metrics["out_of_domain_rejected"]),
                *[_percent(by_kind.get(kind, float("nan"))) for kind in KINDS],
            ]) + " |")  # fmt: skip
            if name.startswith("student"):
                candidates.append((metrics["auroc"], -metrics["fpr_at_95_tpr"], name, method))
    best = max(candidates)
    choice = f"{best[3]} (on {best[2]}: AUROC {best[0]:.4f}, FPR@95%TPR {100 * -best[1]:.1f}%)"
    return "\n".join(lines), choice, best[3]


def source_table(results: dict[str, dict], default: str) -> str:
    """Per model, at its threshold for the default score (its own when it lacks that score): the
    rejection of each non-speech sound and of each speech kind, and the in-domain false rejections."""
    sources = sorted(
        {
            source
            for r in results.values()
            for m in r["metrics"].values()
            for source in m.get("rejected_by_source", {})
        }
    )
    header = ["model", "score", "in-domain false rej. %", *[f"{source} rej. %" for source in sources]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        method = default if default in result["metrics"] else result["method"]
        metrics = result["metrics"][method]
        lines.append("| " + " | ".join([name, method, _percent(metrics["in_domain_false_rejections"]),
                                         *[_percent(metrics.get("rejected_by_source", {}).get(s, float("nan"))) for s in sources]]) + " |")  # fmt: skip
    return "\n".join(lines)


def saved_results(args: argparse.Namespace) -> dict[str, dict]:
    """The eval files a finished run left under ``--work/eval`` (``--report-only``)."""
    from pipeline.core.io import read_json

    names = ("teacher", "teacher_oe", "student", "student_oe", "student_oe_kd")
    return {
        name: read_json(path)
        for name in names
        if (path := args.work / "eval" / name / "ood_test.json").is_file()
    }


def main(argv: list[str] | None = None) -> None:
    from pipeline.core.logging_utils import setup_logging

    args = parse_args(argv)
    setup_logging("INFO")
    start = time.monotonic()
    if args.report_only:
        results = saved_results(args)
    else:
        corpus, mixed = build_data(args)
        results = evaluate_models(args, mixed, train_models(args, corpus, mixed))
    table, choice, default = results_table(results)
    first = next(iter(results.values()))
    minutes = (time.monotonic() - start) / 60
    took = "" if args.report_only else f", {minutes:.1f} min"
    text = "\n\n".join([
        f"# Open-set rejection benchmark ({datetime.date.today()}, {platform.node()}{took})",
        f"Corpus `{args.size}`, out-of-domain `{args.ood_size}` ({args.engines}); student config "
        f"`{args.student_config.relative_to(ROOT) if args.student_config.is_relative_to(ROOT) else args.student_config}`"
        f"{f', {args.epochs} epochs' if args.epochs else ''}"
        f"{f', students on {args.train_fraction:.0%} of train' if args.train_fraction < 1 else ''}"
        f"{f', evaluation splits cut to {args.max_utterances} utterances' if args.max_utterances else ''}"
        f". In-domain: {', '.join(IN_DOMAIN_SPLITS)} "
        f"({first['data']['in_domain_utterances']} utterances); out-of-domain: ood_test "
        f"({first['data']['utterances']} utterances, held-out kinds). Thresholds keep {args.acceptance:.0%} of "
        "the in-domain valid split. `_oe`: trained with outlier exposure (an `unknown` intent); `_kd`: "
        "distilled from teacher_oe's logits. The teachers read the transcripts.",
        table,
        f"Default by measurement: **{choice}**.",
        "Rejection by source at each model's threshold for that score (non-speech by sound):",
        source_table(results, default),
    ])  # fmt: skip
    print(text)  # the benchmark's report goes to stdout, like benchmarks/distill.py's tables
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    logger.info("done in %.1f min", minutes)


if __name__ == "__main__":
    main()
