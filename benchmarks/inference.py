"""Inference speed, memory, size and accuracy: students (PyTorch, ONNX fp32, ONNX int8), teacher, cascade.

    OMP_NUM_THREADS=1 python benchmarks/inference.py \\
        --manifest data/synthetic_small/manifests/test.jsonl \\
        --model exp/synthetic_small/student_kd [--model exp/synthetic_small/student_kd_scratch ...] \\
        [--teacher exp/synthetic_small/teacher] [--cascade exp/synthetic_small/cascade] \\
        [--limit N] [--cascade-limit N] [--runs 200] [--onnx-dir DIR] [--out FILE.md]

Every ``--model`` (a student model dir of any family: the Whisper student, the from-scratch
transformer, ...) gets three rows: PyTorch fp32, ONNX fp32 and ONNX int8. The ONNX files are
exported from the model dir into ``--onnx-dir/<n>_<model dir name>/`` (a temporary folder
unless given; existing exports there are reused). Each method runs in a fresh process on ONE
CPU thread (torch and onnxruntime intra-op threads = 1), on the same audio files, and reports:

- latency at batch 1 for a 3.0 s command (the manifest utterance closest to 3 s; when none is
  within 0.25 s, real utterances concatenated and cut to 3.0 s): median and p90 over ``--runs``
  calls after 10 warm-up calls, waveform in -> logits out (front-end included, decoding excluded);
- real-time factor = median latency / audio duration;
- latency with rejection (students and cascade, issue 17): the same 3 s command at batch 1 through
  ``IntentRecognizer.predict`` with rejection on: the speech check and trimming
  (:mod:`pipeline.data.vad`), the model, the threshold (the model's calibrated one, else 0.5 on
  max-softmax), top-k and slots: what one ``slukd predict`` answer costs after decoding;
- throughput at batch 64 (utterances/s): the first ``--limit`` utterances, decoded beforehand,
  through ``IntentRecognizer.predict`` in length-sorted batches of 64;
- peak memory: the process's peak RSS (VmHWM) minus its RSS after all imports, before the model
  is loaded, so it covers the model, the decoded test audio and the inference buffers; the
  batch-64 run sets it (MB);
- size on disk (the weights file, or the .onnx), accuracy on those utterances with its 95% Wilson
  interval and their number.

The teacher (``--teacher``) runs on the gold transcripts for reference: latency at batch 1 for
one transcript, throughput at batch 64, accuracy. The cascade (``--cascade``, a dir of
``slukd cascade create``: the ASR, then the teacher on its hypothesis) goes through
``IntentRecognizer`` like the students, audio in and intent out, with its ASR on one thread; it
decodes one utterance at a time (its "batch 64" is sequential) on a seeded subset of
``--cascade-limit`` utterances (the subset ``slukd evaluate --seed 0 --max-utterances N`` and
the recipe's cascade evaluation take, drawn from the whole manifest whatever ``--limit``; the students are compared with it on the utterances both ran), and its latency is timed over ``min(--runs, 20)`` calls. Its size is the ASR's
weights plus the teacher's. Prints a markdown table, then per student the targets (issue 12:
int8 at most 25 ms for a 3 s command on one thread for the Whisper student, under 10 ms and RTF
0.004 for the from-scratch one; int8 accuracy within 0.5 points of fp32), then each student's
fastest row against the cascade on the cascade's utterances (issue 13: at least 10x faster; ahead
only where McNemar's exact test on the paired answers gives p < 0.05).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("benchmarks.inference")

STUDENT_METHODS = {"torch": "PyTorch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}
METHODS = {**STUDENT_METHODS, "teacher": "teacher (text), PyTorch", "cascade": "cascade: ASR + teacher"}
CASCADE_RUNS = 20  # the cascade's batch-1 calls at most (each takes a few hundred ms)
COMMAND_SECONDS = 3.0
WARMUP = 10
# int8 latency of a 3 s command on one thread, per student family (issue 12); None: no target
LATENCY_TARGETS_MS = {"whisper": 25.0, "transformer": 10.0}
RTF_TARGETS = {"transformer": 0.004}
ACCURACY_GAP_POINTS = 0.5
CASCADE_SPEEDUP = 10.0  # issue 13: the best student at least this much faster than the cascade
REJECTION_LATENCY_MS = 10.0  # issue 17: int8 with rejection (VAD + threshold), 3 s, batch 1, one thread


def memory_kb(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process, in kB (Linux)."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def timed(function, runs: int) -> list[float]:
    """Seconds per call of ``function()`` after the warm-up calls."""
    for _ in range(WARMUP):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def three_second_command(recognizer, manifest, utterances) -> tuple:
    """A real 3.0 s command: the closest utterance, or real speech concatenated and cut."""
    import numpy as np

    closest = min(utterances, key=lambda u: abs(u.duration - COMMAND_SECONDS))
    if abs(closest.duration - COMMAND_SECONDS) <= 0.25:
        return recognizer.load(manifest.audio_path(closest))[0], f"{closest.id} ({closest.duration:.2f} s)"
    pieces, total = [], 0
    for utterance in utterances:
        pieces.append(recognizer.load(manifest.audio_path(utterance))[0])
        total += len(pieces[-1])
        if total >= COMMAND_SECONDS * recognizer.sample_rate:
            break
    speech = np.concatenate(pieces)[: int(COMMAND_SECONDS * recognizer.sample_rate)]
    return speech, f"{len(pieces)} utterances joined, cut to {len(speech) / recognizer.sample_rate:.2f} s"


def child(args: argparse.Namespace) -> None:
    """Measure one method on one path in this (fresh) process; print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from pipeline.data.manifest import read_manifest

    manifest = read_manifest(args.manifest)
    utterances = list(manifest)[: args.limit] if args.limit else list(manifest)
    if (
        args.method == "cascade" and args.cascade_limit
    ):  # evaluate's subset of the whole split, whatever --limit
        utterances = [manifest[i] for i in cascade_subset(len(manifest), args.cascade_limit)]
    if args.method == "teacher":
        import transformers  # noqa: F401 - imported before the baseline, like everything below
    else:
        import soxr  # noqa: F401

        import pipeline.serving.inference  # noqa: F401
    if args.method.startswith("onnx"):
        import onnxruntime  # noqa: F401
    if args.method == "cascade":
        import faster_whisper  # noqa: F401
        import transformers  # noqa: F401
    baseline = memory_kb("VmRSS")
    result: dict = {"method": args.method, "path": str(args.path), "utterances": len(utterances)}
    if args.method == "teacher":
        from pipeline.teacher.train import load_teacher

        teacher = load_teacher(args.path, "cpu")
        transcripts = [u.transcript for u in utterances]
        one = [min(transcripts, key=lambda t: abs(len(t.split()) - 5))]
        latency = timed(lambda: teacher.logits(one, batch_size=1), args.runs)
        start = time.perf_counter()
        logits = teacher.logits(transcripts, batch_size=64)
        elapsed = time.perf_counter() - start
        gold = np.array([teacher.labels.index(u.intent) for u in utterances])
        correct = (logits.argmax(1) == gold).tolist()
        result.update(
            input=f"transcript {one[0]!r}", size_bytes=(Path(args.path) / "model.safetensors").stat().st_size
        )
    else:
        from pipeline.serving.inference import IntentRecognizer

        path = Path(args.path)
        recognizer = IntentRecognizer.from_pretrained(path)
        command, described = three_second_command(recognizer, manifest, utterances)
        batch, lengths = command[None, :].astype(np.float32), np.array([len(command)], dtype=np.int64)
        runs = min(args.runs, CASCADE_RUNS) if args.method == "cascade" else args.runs
        latency = timed(lambda: recognizer.logits(batch, lengths), runs)
        threshold = "auto" if recognizer.rejection is not None else 0.5  # a number turns rejection on
        rejecting = timed(lambda: recognizer.predict(command, recognizer.sample_rate, 1, threshold), runs)
        result["latency_rejection_ms"] = 1000 * statistics.median(rejecting)
        waveforms = [recognizer.load(manifest.audio_path(u))[0] for u in utterances]
        start = time.perf_counter()
        predictions = recognizer.predict(
            waveforms, recognizer.sample_rate, batch_size=64, threshold=None
        )  # closed set
        elapsed = time.perf_counter() - start
        correct = [p.intent == u.intent for p, u in zip(predictions, utterances, strict=True)]
        if args.method == "cascade":
            size_bytes = recognizer.backend.cascade.size_bytes
        else:
            size_bytes = (path / "model.safetensors" if args.method == "torch" else path).stat().st_size
        result.update(
            input=described, command_seconds=len(command) / recognizer.sample_rate, size_bytes=size_bytes
        )
    result.update(
        accuracy=sum(correct) / len(utterances),
        correct=[bool(c) for c in correct],
        ids=[u.id for u in utterances],
        latency_ms=1000 * statistics.median(latency),
        latency_p90_ms=1000 * float(np.percentile(latency, 90)),
        throughput=len(utterances) / elapsed,
        peak_memory_mb=(memory_kb("VmHWM") - baseline) / 1024,
    )
    if "command_seconds" in result:
        result["rtf"] = result["latency_ms"] / 1000 / result["command_seconds"]
    print(json.dumps(result))


def cascade_subset(size: int, count: int) -> list[int]:
    """The cascade's utterances: the seeded subset ``slukd evaluate --seed 0 --max-utterances N``
    (and the recipe's cascade evaluation) takes."""
    from pipeline.evaluation.evaluate import EvaluateConfig, choose_subset

    return choose_subset(size, EvaluateConfig(seed=0, max_utterances=min(count, size)))[0]


def run_method(method: str, path: Path, args: argparse.Namespace) -> dict:
    """``method`` on ``path`` in a fresh process on one thread: its JSON result."""
    command = [
        sys.executable, __file__, "--child", method, "--path", str(path), "--manifest", str(args.manifest),
        "--runs", str(args.runs), "--limit", str(args.limit), "--cascade-limit", str(args.cascade_limit),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if finished.returncode != 0:
        raise SystemExit(f"{method} on {path} failed: {finished.stderr.strip().splitlines()[-1:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


@dataclass
class Student:
    """A student model dir and its ONNX exports."""

    model_dir: Path
    family: str
    onnx_fp32: Path
    onnx_int8: Path

    @property
    def name(self) -> str:
        """``whisper student `student_kd` `` (a ``seedN`` run folder is named with its parent)."""
        folder = self.model_dir.name
        if folder.startswith("seed"):
            folder = f"{self.model_dir.parent.name}/{folder}"
        return f"{self.family} student `{folder}`"

    def path(self, method: str) -> Path:
        return {"torch": self.model_dir, "onnx_fp32": self.onnx_fp32, "onnx_int8": self.onnx_int8}[method]


def prepare_student(model_dir: Path, index: int, onnx_root: Path, methods: list[str]) -> Student:
    """The student's family and its fp32 and int8 exports (made when missing)."""
    from pipeline.serving.export import export_model
    from pipeline.serving.model_dir import read_config

    folder = onnx_root / f"{index}_{model_dir.name}"
    student = Student(
        model_dir, read_config(model_dir)["family"], folder / "model.onnx", folder / "model.int8.onnx"
    )
    for method, path, int8 in (
        ("onnx_fp32", student.onnx_fp32, False),
        ("onnx_int8", student.onnx_int8, True),
    ):
        if method in methods and not path.is_file():
            export_model(model_dir, path, int8=int8)
    return student


@dataclass
class Row:
    """One measured row: who (a student and a method, the teacher or the cascade) and the result."""

    label: str
    result: dict
    student: Student | None = None


def accuracy_cell(result: dict) -> str:
    """``98.39% [97.1, 99.1]``: the accuracy and its 95% Wilson interval over the row's utterances."""
    from pipeline.scoring.intervals import accuracy_estimate

    estimate = accuracy_estimate(result["correct"])
    return f"{100 * estimate.value:.2f}% [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"


def table(rows: list[Row]) -> str:
    header = (
        "| model | latency b=1 median (p90) ms | with rejection b=1 ms | RTF | throughput b=64 utt/s "
        "| peak memory MB | size MB | accuracy [95% CI] | utterances | input |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        result = row.result
        rtf = f"{result['rtf']:.4f}" if "rtf" in result else "-"
        rejecting = f"{result['latency_rejection_ms']:.2f}" if "latency_rejection_ms" in result else "-"
        lines.append(
            f"| {row.label} | {result['latency_ms']:.2f} ({result['latency_p90_ms']:.2f}) | {rejecting} | {rtf} "
            f"| {result['throughput']:.1f} | {result['peak_memory_mb']:.1f} | {result['size_bytes'] / 1e6:.2f} "
            f"| {accuracy_cell(result)} | {result['utterances']} | {result['input']} |"
        )
    return "\n".join(lines)


def check(text: str, met: bool) -> str:
    return f"- {'met' if met else 'NOT met'}: {text}"


def targets(student: Student, results: dict[str, dict]) -> list[str]:
    """The student's int8 row against its family's latency target and its fp32 accuracy."""
    if "onnx_int8" not in results:
        return []
    int8, lines = results["onnx_int8"], []
    target = LATENCY_TARGETS_MS.get(student.family)
    if target is not None:
        lines.append(check(f"{student.name} int8 latency {int8['latency_ms']:.2f} ms <= {target:g} ms",
                           int8["latency_ms"] <= target))  # fmt: skip
    rtf_target = RTF_TARGETS.get(student.family)
    if rtf_target is not None:
        lines.append(
            check(f"{student.name} int8 RTF {int8['rtf']:.4f} < {rtf_target}", int8["rtf"] < rtf_target)
        )
    lines.append(check(f"{student.name} int8 latency with rejection {int8['latency_rejection_ms']:.2f} ms <= "
                       f"{REJECTION_LATENCY_MS:g} ms", int8["latency_rejection_ms"] <= REJECTION_LATENCY_MS))  # fmt: skip
    if "onnx_fp32" in results:
        gap = 100 * (results["onnx_fp32"]["accuracy"] - int8["accuracy"])
        lines.append(check(f"{student.name} int8 accuracy {gap:+.2f} points below ONNX fp32 (within "
                           f"{ACCURACY_GAP_POINTS})", gap <= ACCURACY_GAP_POINTS))  # fmt: skip
    return lines


def cascade_comparison(student: Student, results: dict[str, dict], cascade: dict) -> list[str]:
    """The student's fastest row against the cascade: speed ratio, accuracy on the cascade's utterances."""
    if not results:
        return []
    from pipeline.scoring.intervals import AHEAD, accuracy_estimate, mcnemar_exact, verdict

    method, fastest = min(results.items(), key=lambda item: item[1]["latency_ms"])
    correct = dict(zip(fastest["ids"], fastest["correct"], strict=True))
    shared = [
        (correct[i], right)
        for i, right in zip(cascade["ids"], cascade["correct"], strict=True)
        if i in correct
    ]
    if not shared:
        return [f"- {student.name}: none of the cascade's utterances among its own (--limit)"]
    same, cascade_correct = [pair[0] for pair in shared], [pair[1] for pair in shared]
    count = len(shared)
    mine, theirs = accuracy_estimate(same), accuracy_estimate(cascade_correct)
    student_accuracy = 100 * mine.value
    speedup = cascade["latency_ms"] / fastest["latency_ms"]
    paired = verdict(same, cascade_correct)  # McNemar's exact test on the same utterances
    return [check(
        f"{student.name}, {STUDENT_METHODS[method]}: {speedup:.0f}x faster than the cascade on one thread "
        f"(>= {CASCADE_SPEEDUP:g}x), {paired} on accuracy by {student_accuracy - 100 * theirs.value:+.2f} points "
        f"(McNemar p={mcnemar_exact(same, cascade_correct).p_value:.2g}) on {count} of the cascade's utterances "
        f"({student_accuracy:.2f}% [{100 * mine.low:.1f}, {100 * mine.high:.1f}] vs {100 * theirs.value:.2f}% "
        f"[{100 * theirs.low:.1f}, {100 * theirs.high:.1f}]), {cascade['size_bytes'] / fastest['size_bytes']:.0f}x smaller",
        speedup >= CASCADE_SPEEDUP and paired == AHEAD,
    )]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=ROOT / "data/synthetic_small/manifests/test.jsonl")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="a student model dir (repeatable: one set of rows each)")  # fmt: skip
    parser.add_argument("--teacher", type=Path, default=None, help="a fine-tuned teacher dir (optional)")
    parser.add_argument("--cascade", type=Path, default=None, help="a cascade dir (optional; slow)")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    parser.add_argument(
        "--cascade-limit", type=int, default=100, help="first N utterances for the cascade (0: all)"
    )
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 calls after the warm-up")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="where the ONNX exports go / are reused")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        args.method = args.child
        logging.basicConfig(level=logging.WARNING)
        child(args)
        return
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    logger.info("command line: %s", " ".join(sys.argv))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.cascade_limit and args.limit and args.cascade_limit > args.limit:
        raise SystemExit(
            "--cascade-limit must not exceed --limit (the students are compared on its utterances)"
        )
    start = time.perf_counter()
    rows: list[Row] = []
    per_student: list[tuple[Student, dict[str, dict]]] = []
    with tempfile.TemporaryDirectory(prefix="slukd-inference-bench.") as scratch:
        onnx_root = args.onnx_dir or Path(scratch)
        for index, model_dir in enumerate(args.model):
            student = prepare_student(model_dir, index, onnx_root, methods)
            results = {}
            for method in (m for m in STUDENT_METHODS if m in methods):
                started = time.perf_counter()
                results[method] = run_method(method, student.path(method), args)
                rows.append(Row(f"{student.name}, {STUDENT_METHODS[method]}", results[method], student))
                logger.info("%s: latency %.2f ms, accuracy %.4f (%.0f s)", rows[-1].label, results[method]["latency_ms"],
                            results[method]["accuracy"], time.perf_counter() - started)  # fmt: skip
            per_student.append((student, results))
    cascade = None
    for method, path in (("teacher", args.teacher), ("cascade", args.cascade)):
        if method in methods and path is not None:
            started = time.perf_counter()
            result = run_method(method, path, args)
            rows.append(Row(METHODS[method], result))
            logger.info("%s: latency %.2f ms, accuracy %.4f (%.0f s)", METHODS[method], result["latency_ms"],
                        result["accuracy"], time.perf_counter() - started)  # fmt: skip
            cascade = result if method == "cascade" else cascade
    if not rows:
        raise SystemExit("nothing to measure: give --model, --teacher or --cascade")
    checks = [line for student, results in per_student for line in targets(student, results)]
    if cascade is not None:
        checks += [
            line for student, results in per_student for line in cascade_comparison(student, results, cascade)
        ]
    text = (
        f"`python benchmarks/inference.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d')}, "
        f"{(time.perf_counter() - start) / 60:.1f} min. One CPU thread; {args.manifest}.\n\n"
        f"{table(rows)}\n\n" + "\n".join(checks) + "\n"
    )
    print(text, flush=True)
    if args.out:
        from pipeline.core.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
