"""Inference speed, memory, size and accuracy: PyTorch student, ONNX fp32, ONNX int8, teacher, cascade.

    OMP_NUM_THREADS=1 python benchmarks/inference.py \\
        --manifest data/synthetic_small/manifests/test.jsonl \\
        --model exp/synthetic_small/bench_distill/row0_seed0 \\
        [--teacher exp/synthetic_small/teacher] [--cascade exp/synthetic_small/cascade] \\
        [--limit N] [--runs 200] [--onnx-dir DIR]

The ONNX files are exported from ``--model`` into ``--onnx-dir`` (a temporary folder unless
given; existing exports there are reused). Each method runs in a fresh process on ONE CPU thread
(torch and onnxruntime intra-op threads = 1), on the same audio files, and reports:

- latency at batch 1 for a 3.0 s command (the manifest utterance closest to 3 s; when none is
  within 0.25 s, real utterances concatenated and cut to 3.0 s): median and p90 over ``--runs``
  calls after 10 warm-up calls, waveform in -> logits out (fbank included, decoding excluded);
- real-time factor = median latency / audio duration;
- throughput at batch 64 (utterances/s): the first ``--limit`` utterances, decoded beforehand,
  through ``IntentRecognizer.predict`` in length-sorted batches of 64;
- peak memory: the process's peak RSS (VmHWM) minus its RSS after all imports, before the model
  is loaded, so it covers the model, the decoded test audio and the inference buffers; the
  batch-64 run sets it (MB);
- size on disk (the weights file, or the .onnx), accuracy on those utterances.

The teacher (``--teacher``) runs on the gold transcripts for reference: latency at batch 1 for
one transcript, throughput at batch 64, accuracy. The cascade (``--cascade``, a dir of
``slukd cascade create``: the ASR, then the teacher on its hypothesis) goes through
``IntentRecognizer`` like the student, audio in and intent out, with its ASR on one thread; it
decodes one utterance at a time (its "batch 64" is sequential), and its latency is timed over
``min(--runs, 20)`` calls. Its size is the ASR's weights plus the teacher's. Prints a markdown table, then the targets
(int8: < 10 ms and RTF < 0.004 for a 3 s command on one thread; accuracy within 0.5 points of fp32).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("benchmarks.inference")

METHODS = {
    "torch": "student, PyTorch fp32",
    "onnx_fp32": "student, ONNX fp32",
    "onnx_int8": "student, ONNX int8",
    "teacher": "teacher (text), PyTorch",
    "cascade": "cascade: ASR + teacher",
}
CASCADE_RUNS = 20  # the cascade's batch-1 calls at most (each takes a few hundred ms)
COMMAND_SECONDS = 3.0
WARMUP = 10
LATENCY_TARGET_MS = 10.0
RTF_TARGET = 0.004
ACCURACY_GAP_POINTS = 0.5


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
    """Measure one method in this (fresh) process; print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from pipeline.manifest import read_manifest

    manifest = read_manifest(args.manifest)
    utterances = list(manifest)[: args.limit] if args.limit else list(manifest)
    if args.method == "teacher":
        import transformers  # noqa: F401 - imported before the baseline, like everything below
    else:
        import soxr  # noqa: F401

        import pipeline.inference  # noqa: F401
    if args.method.startswith("onnx"):
        import onnxruntime  # noqa: F401
    if args.method == "cascade":
        import faster_whisper  # noqa: F401
        import transformers  # noqa: F401
    baseline = memory_kb("VmRSS")
    result: dict = {"method": args.method, "utterances": len(utterances)}
    if args.method == "teacher":
        from pipeline.teacher import load_teacher

        teacher = load_teacher(args.teacher, "cpu")
        transcripts = [u.transcript for u in utterances]
        one = [min(transcripts, key=lambda t: abs(len(t.split()) - 5))]
        latency = timed(lambda: teacher.logits(one, batch_size=1), args.runs)
        start = time.perf_counter()
        logits = teacher.logits(transcripts, batch_size=64)
        elapsed = time.perf_counter() - start
        gold = np.array([teacher.labels.index(u.intent) for u in utterances])
        result.update(
            input=f"transcript {one[0]!r}",
            accuracy=float((logits.argmax(1) == gold).mean()),
            size_bytes=(Path(args.teacher) / "model.safetensors").stat().st_size,
        )
    else:
        from pipeline.inference import IntentRecognizer

        paths = {"torch": args.model, "onnx_fp32": args.onnx_fp32, "onnx_int8": args.onnx_int8,
                 "cascade": args.cascade}  # fmt: skip
        path = paths[args.method]
        recognizer = IntentRecognizer.from_pretrained(path)
        command, described = three_second_command(recognizer, manifest, utterances)
        batch, lengths = command[None, :].astype(np.float32), np.array([len(command)], dtype=np.int64)
        runs = min(args.runs, CASCADE_RUNS) if args.method == "cascade" else args.runs
        latency = timed(lambda: recognizer.logits(batch, lengths), runs)
        waveforms = [recognizer.load(manifest.audio_path(u))[0] for u in utterances]
        start = time.perf_counter()
        predictions = recognizer.predict(waveforms, sample_rate=recognizer.sample_rate, batch_size=64)
        elapsed = time.perf_counter() - start
        correct = sum(p.intent == u.intent for p, u in zip(predictions, utterances, strict=True))
        if args.method == "cascade":
            size_bytes = recognizer.backend.cascade.size_bytes
        else:
            size_bytes = (
                (Path(path) / "model.safetensors" if args.method == "torch" else Path(path)).stat().st_size
            )
        result.update(
            input=f"{described}",
            command_seconds=len(command) / recognizer.sample_rate,
            accuracy=correct / len(utterances),
            size_bytes=size_bytes,
        )
    result.update(
        latency_ms=1000 * statistics.median(latency),
        latency_p90_ms=1000 * float(np.percentile(latency, 90)),
        throughput=len(utterances) / elapsed,
        peak_memory_mb=(memory_kb("VmHWM") - baseline) / 1024,
    )
    if "command_seconds" in result:
        result["rtf"] = result["latency_ms"] / 1000 / result["command_seconds"]
    print(json.dumps(result))


def run_method(method: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", method, "--manifest", str(args.manifest), "--model", str(args.model),
        "--onnx-fp32", str(args.onnx_fp32), "--onnx-int8", str(args.onnx_int8), "--runs", str(args.runs),
        "--limit", str(args.limit),
    ]  # fmt: skip
    if args.teacher:
        command += ["--teacher", str(args.teacher)]
    if args.cascade:
        command += ["--cascade", str(args.cascade)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if finished.returncode != 0:
        raise SystemExit(f"{method} failed: {finished.stderr.strip().splitlines()[-1:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def export_onnx_files(args: argparse.Namespace) -> None:
    """fp32 and int8 exports of ``--model`` into ``--onnx-dir`` (reused when present)."""
    from pipeline.export import export_model

    folder = Path(args.onnx_dir)
    args.onnx_fp32, args.onnx_int8 = folder / "model.onnx", folder / "model.int8.onnx"
    for path, int8 in ((args.onnx_fp32, False), (args.onnx_int8, True)):
        if not path.is_file():
            export_model(args.model, path, int8=int8)


def table(rows: list[dict]) -> str:
    header = (
        "| method | latency b=1 median (p90) ms | RTF | throughput b=64 utt/s | peak memory MB | size MB "
        "| accuracy | input |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        rtf = f"{row['rtf']:.4f}" if "rtf" in row else "-"
        lines.append(
            f"| {METHODS[row['method']]} | {row['latency_ms']:.2f} ({row['latency_p90_ms']:.2f}) | {rtf} "
            f"| {row['throughput']:.1f} | {row['peak_memory_mb']:.1f} | {row['size_bytes'] / 1e6:.2f} "
            f"| {100 * row['accuracy']:.2f}% | {row['input']} |"
        )
    return "\n".join(lines)


def targets(rows: dict[str, dict]) -> str:
    if "onnx_int8" not in rows or "onnx_fp32" not in rows:
        return ""
    int8, fp32 = rows["onnx_int8"], rows["onnx_fp32"]
    gap = 100 * (fp32["accuracy"] - int8["accuracy"])
    checks = [
        (
            f"int8 latency {int8['latency_ms']:.2f} ms < {LATENCY_TARGET_MS:g} ms",
            int8["latency_ms"] < LATENCY_TARGET_MS,
        ),
        (f"int8 RTF {int8['rtf']:.4f} < {RTF_TARGET}", int8["rtf"] < RTF_TARGET),
        (
            f"int8 accuracy {gap:+.2f} points below fp32 (within {ACCURACY_GAP_POINTS})",
            gap <= ACCURACY_GAP_POINTS,
        ),
    ]
    return "\n".join(f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks)


def cascade_comparison(rows: dict[str, dict]) -> str:
    """The best student row against the cascade: latency ratio and accuracy difference with its sign."""
    students = [rows[m] for m in ("torch", "onnx_fp32", "onnx_int8") if m in rows]
    if "cascade" not in rows or not students:
        return ""
    cascade, fastest = rows["cascade"], min(students, key=lambda row: row["latency_ms"])
    return (f"- {METHODS[fastest['method']]} against the cascade: {cascade['latency_ms'] / fastest['latency_ms']:.0f}x "
            f"faster on one thread, accuracy {100 * (fastest['accuracy'] - cascade['accuracy']):+.2f} points, "
            f"{cascade['size_bytes'] / fastest['size_bytes']:.0f}x smaller")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=ROOT / "data/synthetic_small/manifests/test.jsonl")
    parser.add_argument("--model", type=Path, default=ROOT / "exp/synthetic_small/bench_distill/row0_seed0")
    parser.add_argument("--teacher", type=Path, default=None, help="a fine-tuned teacher dir (optional)")
    parser.add_argument("--cascade", type=Path, default=None, help="a cascade dir (optional; slow: --limit)")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 calls after the warm-up")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="where the ONNX exports go / are reused")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-fp32", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-int8", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
    if "teacher" in methods and not args.teacher:
        methods.remove("teacher")
        logger.info("no --teacher: skipping the teacher row")
    if "cascade" in methods and not args.cascade:
        methods.remove("cascade")
        logger.info("no --cascade: skipping the cascade row")
    with tempfile.TemporaryDirectory(prefix="slukd-inference-bench.") as scratch:
        args.onnx_dir = args.onnx_dir or Path(scratch)
        export_onnx_files(args)
        rows = {}
        for method in methods:
            started = time.perf_counter()
            rows[method] = run_method(method, args)
            logger.info("%s: %s (%.0f s)", method, rows[method], time.perf_counter() - started)
    print(f"Utterances: {next(iter(rows.values()))['utterances']} of {args.manifest}; one CPU thread.\n")
    print(table(list(rows.values())))
    print()
    print(targets(rows))
    print(cascade_comparison(rows))


if __name__ == "__main__":
    main()
