"""Whole commands in loud noise, through prediction's own path, mixed the way noisy-command
benchmarks mix.

Each utterance of a split gets silence either side (``--pad`` seconds, as a recording made by a
person has), then noise over the whole file at an SNR taken on the loudest 25 ms frame
(``reference="peak"`` in :func:`pipeline.augment.noise.add_noise`: far noisier than the same
number of dB on the mean power). Noise kinds are the evaluation sweep's
(:mod:`pipeline.augment.conditions`: white, pink, household, babble), seeded per utterance, so
every model hears the same audio. Every file then goes through :class:`IntentRecognizer` exactly as
``slukd predict`` runs it: the speech check, trimming, the model, joint decoding of intent and
slots, and the model's calibrated threshold (``--threshold auto``).

Babble is three other commands of the grammar by default (valid's: the hardest babble there is, a
competing talker who says a command). A cafe's crowd is closer to many talkers who say anything:
``--babble-from data/.../ood_test.jsonl --babble-speakers 8`` builds it from the spoken lines of
another manifest (never the scored split).

Each cell counts, of the commands: accepted and exactly right (intent and every slot), answered
``no speech``, rejected as ``low confidence`` / ``not a command``, and accepted but wrong. The
table gives the first with its Wilson 95% interval and the number of utterances.

    python benchmarks/noisy_commands.py --models exp/grammar_pizza_small/student_kd \\
        --data data/grammar_pizza_small/openset/manifests --split test_unseen_engine \\
        --noises white,household,babble --snrs 24,18,12,6 --utterances 200
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.augment.conditions import SWEEP_NOISE_TYPES, BabbleBank, NoiseCondition, noisy_waveforms
from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_write_text
from pipeline.data.audio import SAMPLE_RATE, AudioError
from pipeline.data.batching import WaveformDataset, pad_sequences
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.scoring.intervals import wilson_interval
from pipeline.serving.inference import IntentRecognizer
from pipeline.serving.rejection import NO_SPEECH

logger = logging.getLogger("benchmarks.noisy_commands")

OUTCOMES = ("right", "no speech", "rejected", "wrong")


def subset(manifest: Manifest, count: int, seed: int) -> Manifest:
    """A seeded subset of ``count`` utterances (all of them with 0 or more than the split has)."""
    if count <= 0 or count >= len(manifest):
        return manifest
    order = np.random.default_rng([seed, 11]).permutation(len(manifest))[:count]
    return Manifest([manifest[i] for i in sorted(order.tolist())], manifest.path)


def spoken(manifest: Manifest) -> Manifest:
    """The utterances that have a transcript (speech, not the non-speech sounds of an ``ood`` split)."""
    return Manifest([item for item in manifest if (item.transcript or "").strip()], manifest.path)


def padded_clips(manifest: Manifest, pad_seconds: float) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Ids, the ``[B, S]`` zero-padded batch of every clip with ``pad_seconds`` of silence either
    side, and ``[B]`` lengths."""
    dataset = WaveformDataset(manifest, SAMPLE_RATE)
    pad = int(round(pad_seconds * SAMPLE_RATE))
    clips, ids = [], []
    for index in range(len(manifest)):
        item = dataset[index]
        if item.error:
            raise AudioError(item.error)
        clips.append(torch.nn.functional.pad(item.waveform.float(), (pad, pad)))
        ids.append(manifest[index].id)
    batch, lengths = pad_sequences(clips, dtype=torch.float32)
    return ids, batch, lengths


def outcome(prediction, utterance) -> str:
    """Which of :data:`OUTCOMES` a prediction is for its manifest utterance."""
    if prediction.reason == NO_SPEECH:
        return "no speech"
    if prediction.reason:
        return "rejected"
    gold = {name: value for name, value in (utterance.slots or {}).items() if value != "none"}
    return "right" if prediction.intent == utterance.intent and prediction.slots == gold else "wrong"


def score(recognizer: IntentRecognizer, manifest: Manifest, ids: list[str], batch: torch.Tensor,
          lengths: torch.Tensor, threshold: str | float | None) -> Counter:  # fmt: skip
    """Outcome counts of one model on one noisy batch."""
    arrays = [batch[row, : int(lengths[row])].numpy() for row in range(len(ids))]
    predictions = recognizer.predict(arrays, sample_rate=SAMPLE_RATE, threshold=threshold, top_k=1)
    return Counter(outcome(p, u) for p, u in zip(predictions, manifest, strict=True))


def cell(counts: Counter, total: int) -> str:
    right = counts["right"]
    low, high = wilson_interval(right, total)
    shares = "/".join(f"{100 * counts[name] / total:.0f}" for name in OUTCOMES[1:])
    return f"{100 * right / total:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({shares})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="model dirs or .onnx files")
    parser.add_argument("--data", type=Path, required=True, help="the manifests folder")
    parser.add_argument("--split", default="test_unseen_engine")
    parser.add_argument(
        "--noises", default="white,household,babble", help=f"of {', '.join(SWEEP_NOISE_TYPES)}"
    )
    parser.add_argument("--snrs", default="24,18,12,6", help="peak-frame SNRs in dB")
    parser.add_argument("--utterances", type=int, default=200, help="a seeded subset (0: the whole split)")
    parser.add_argument(
        "--pad", type=float, default=0.5, help="seconds of silence either side of each command"
    )
    parser.add_argument(
        "--babble-from", type=Path, default=None,
        help="a manifest whose speech makes the babble (default: the data's valid split: other commands)",
    )  # fmt: skip
    parser.add_argument(
        "--babble-speakers", type=int, default=3, help="talkers summed into one babble (a crowd: 8 or more)"
    )
    parser.add_argument("--threshold", default="auto", help="auto (the model's own), none or a number")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    args = parse_args(argv)
    threshold = None if args.threshold == "none" else args.threshold
    if threshold not in (None, "auto"):
        threshold = float(threshold)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        manifest = subset(read_manifest(args.data / f"{args.split}.jsonl"), args.utterances, args.seed)
        ids, clean, lengths = padded_clips(manifest, args.pad)
        babble_from = args.babble_from or args.data / "valid.jsonl"  # never the scored split
        bank = BabbleBank(spoken(read_manifest(babble_from)), 32, args.seed, speakers=args.babble_speakers)
        conditions = [NoiseCondition("clean")] + [
            NoiseCondition(noise.strip(), float(snr), reference="peak")
            for noise in args.noises.split(",") for snr in args.snrs.split(",")
        ]  # fmt: skip
        recognizers = {str(path): IntentRecognizer.from_pretrained(path) for path in args.models}
        rows = {name: {} for name in recognizers}
        started = time.monotonic()
        for condition in tqdm(conditions, desc="conditions"):
            noisy = noisy_waveforms(clean, lengths, ids, condition, args.seed, bank)
            for name, recognizer in recognizers.items():
                rows[name][condition.name] = score(recognizer, manifest, ids, noisy, lengths, threshold)
    except (SlukdError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = len(manifest)
    lines = [
        f"Split `{args.split}` of `{args.data}`, {total} utterances, {args.pad:g} s of silence either side, "
        f"noise over the whole file at an SNR on the loudest 25 ms frame (babble: {args.babble_speakers} "
        f"talkers of `{babble_from}`); threshold `{args.threshold}`; "
        f"{time.monotonic() - started:.0f} s. Each cell: whole commands accepted and right, % [Wilson 95%] "
        f"(no speech / rejected / wrong, %).",
        "",
        "| model | condition | accepted and right |",
        "|---|---|---|",
    ]
    for name, cells in rows.items():
        for condition, counts in cells.items():
            lines.append(f"| {name} | {condition} | {cell(counts, total)} |")
        noisy = [counts for condition, counts in cells.items() if condition != "clean"]
        if noisy:
            mean = sum(counts["right"] for counts in noisy) / (total * len(noisy))
            lines.append(f"| {name} | mean of the noisy cells | {100 * mean:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
