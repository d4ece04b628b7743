"""Feature extraction throughput, side by side on the same files, one fresh process per method.

    python benchmarks/features.py [--manifest M] [--max-hours H] [--num-workers N]

Methods:
  (a) decode only      the I/O floor: the same DataLoader workers, no features
  (b) librosa loop     per-utterance decode + librosa melspectrogram (80 bins, 25/10 ms)
  (c) kaldi loop       per-utterance decode + torchaudio.compliance.kaldi.fbank
  (d) slukd cpu        `compute_feature_store` on the CPU (writes the float16 store + CMVN)
  (e) slukd cuda       the same on the GPU, when torch sees one

Prints a table: audio hours, seconds, x real time, hours of audio per minute, peak RSS (the
method's process and its DataLoader workers), and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = {
    "a": "decode only (I/O floor)",
    "b": "librosa melspectrogram loop",
    "c": "torchaudio kaldi.fbank loop",
    "d": "slukd batched, cpu",
    "e": "slukd batched, cuda",
}


def limited_manifest(manifest_path: Path, max_hours: float, folder: Path) -> Path:
    """The first utterances of a manifest up to ``max_hours``, with absolute audio paths."""
    from pipeline.data.manifest import read_manifest, write_manifest

    manifest = read_manifest(manifest_path)
    chosen, total = [], 0.0
    for utterance in manifest:
        if total >= max_hours * 3600:
            break
        utterance.audio = str(manifest.audio_path(utterance))
        chosen.append(utterance)
        total += utterance.duration
    return write_manifest(folder / "bench.jsonl", chosen)


def run_method(method: str, manifest_path: Path, num_workers: int, batch_seconds: float) -> float:
    """Run one method in this process; returns the wall seconds it took."""
    import numpy as np
    import torch

    from pipeline.data.audio import load_audio
    from pipeline.data.manifest import read_manifest
    from pipeline.frontends.feature_store import default_num_workers

    num_workers = num_workers if num_workers >= 0 else default_num_workers("cuda" if method == "e" else "cpu")
    manifest = read_manifest(manifest_path)
    start = time.perf_counter()
    if method == "a":
        from torch.utils.data import DataLoader

        from pipeline.data.batching import WaveformDataset, batches_by_duration, collate_waveforms

        batches = batches_by_duration([u.duration for u in manifest], batch_seconds)
        loader = DataLoader(
            WaveformDataset(manifest),
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate_waveforms,
        )
        samples = sum(int(batch.lengths.sum()) for batch in loader)
        assert samples > 0
    elif method == "b":
        import librosa

        for utterance in manifest:
            waveform = load_audio(manifest.audio_path(utterance))
            mel = librosa.feature.melspectrogram(
                y=waveform, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80, center=False
            )
            np.log(np.maximum(mel, 1e-10))
    elif method == "c":
        import torchaudio.compliance.kaldi as kaldi

        with torch.no_grad():
            for utterance in manifest:
                waveform = torch.from_numpy(load_audio(manifest.audio_path(utterance)))
                kaldi.fbank(waveform[None] * 32768, num_mel_bins=80, dither=0.0)
    else:
        from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store

        device = "cpu" if method == "d" else "cuda"
        with tempfile.TemporaryDirectory() as folder:
            options = ExtractionOptions(device=device, batch_seconds=batch_seconds, num_workers=num_workers)
            compute_feature_store(manifest_path, Path(folder) / "store", options=options)
            if device == "cuda":
                torch.cuda.synchronize()
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    seconds = run_method(args.method, args.manifest, args.num_workers, args.batch_seconds)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mb": (own + workers) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=ROOT / "data/synthetic_small/manifests/train.jsonl")
    parser.add_argument("--max-hours", type=float, default=0.5, help="audio to process per method")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=-1,
        help="DataLoader decoding processes for (a), (d), (e); -1: slukd's default",
    )
    parser.add_argument("--batch-seconds", type=float, default=300.0)
    parser.add_argument("--methods", default="abcde", help="which methods to run")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    if args.method:
        child(args)
        return

    import torch

    from pipeline.data.manifest import read_manifest

    if not args.manifest.is_file():
        sys.exit(f"{args.manifest}: manifest not found; build the corpus first (make run) or pass --manifest")
    with tempfile.TemporaryDirectory() as folder:
        manifest_path = limited_manifest(args.manifest, args.max_hours, Path(folder))
        hours = read_manifest(manifest_path).total_duration / 3600
        rows = {}
        for method in args.methods:
            if method == "e" and not torch.cuda.is_available():
                continue
            command = [sys.executable, __file__, "--method", method, "--manifest", str(manifest_path),
                       "--num-workers", str(args.num_workers), "--batch-seconds", str(args.batch_seconds)]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[method] = json.loads(result.stdout.strip().splitlines()[-1])

    cpu = f"{os.cpu_count()} cpu cores" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    )
    from pipeline.frontends.feature_store import default_num_workers

    workers = args.num_workers if args.num_workers >= 0 else default_num_workers()
    print(
        f"\n{hours:.3f} h of audio ({args.manifest}); {workers} decoding worker(s); torch {torch.__version__}; {cpu}"
    )
    print("| method | seconds | x real time | h audio / min | peak RSS (MB) |\n|---|---|---|---|---|")
    for method, row in rows.items():
        speed = hours * 3600 / row["seconds"]
        print(
            f"| ({method}) {METHODS[method]} | {row['seconds']:.2f} | {speed:.0f} | {speed / 60:.2f} | {row['peak_rss_mb']:.0f} |"
        )
    if "d" in rows:
        print()
        if "b" in rows:
            print(
                f"(d) vs (b) librosa loop: {rows['b']['seconds'] / rows['d']['seconds']:.2f}x faster (target >= 5x)"
            )
        if "c" in rows:
            print(f"(d) vs (c) kaldi loop:   {rows['c']['seconds'] / rows['d']['seconds']:.2f}x faster")
        if "a" in rows:
            print(
                f"(d) vs (a) decode floor: {rows['d']['seconds'] / rows['a']['seconds']:.2f}x the floor's time (target <= 1.5x)"
            )
    if "e" in rows:
        print(f"(e) cuda: {hours * 3600 / rows['e']['seconds']:.0f}x real time (target > 2000x)")


if __name__ == "__main__":
    main()
