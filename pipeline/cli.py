"""The ``slukd`` command: a thin layer over importable functions of the same names.

    slukd prepare CORPUS [options]   corpus preparation (same as python -m data_prep.CORPUS)
    slukd validate MANIFEST...       check manifests against their labels.json and audio
    slukd features --manifest M --out DIR   log-mel feature store (+ CMVN), batched on any device
    slukd train --data D --features F --out DIR   train a student (CE-only or distilled)
    slukd teacher train --data D --out DIR  fine-tune the BERT teacher on the transcripts of D
    slukd teacher export --model DIR --data D --out DIR   teacher targets, one row per transcript
    slukd predict --model DIR|model.onnx FILE|DIR|@LIST|-...   one JSON line per audio file
    slukd export --model DIR [--int8] [--verify FILE...]   ONNX (waveform in, logits out) + sidecar JSON
    slukd evaluate --model DIR --data D --split S   accuracy, noise sweep, WER, speed -> DIR/eval/S.json
    slukd report EXP_DIR             report.md/.html, metrics.json and figures of every evaluated model

Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline import __version__
from pipeline.logging_utils import setup_logging

logger = logging.getLogger("slukd")

# corpus name -> module with main(argv) (python -m data_prep.<module>)
CORPORA = {
    "synthetic": "data_prep.synthetic.__main__",
    "fsc": "data_prep.fsc",
    "slurp": "data_prep.slurp",
    "csv": "data_prep.csv_manifest",
}


def prepare(corpus: str, argv: list[str]) -> int:
    """Run a corpus preparer's command line."""
    try:
        module = importlib.import_module(CORPORA[corpus])
    except KeyError:
        raise SystemExit(
            f"slukd prepare: unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}"
        ) from None
    return int(module.main(argv) or 0)


def validate(manifests: list[Path], labels_path: Path | None = None, check_audio: bool = False) -> int:
    """Validate manifests (and optionally every audio file); returns the number of problems."""
    from tqdm import tqdm

    from pipeline.audio import AudioError, audio_info
    from pipeline.labels import LABELS_FILENAME, LabelError, LabelSet
    from pipeline.manifest import ManifestError, read_manifest

    problems = 0
    for path in manifests:
        try:
            candidate = labels_path or path.parent / LABELS_FILENAME
            labels = LabelSet.load(candidate) if candidate.exists() or labels_path else None
            manifest = read_manifest(path, labels)
        except (ManifestError, LabelError) as error:
            logger.error("%s", error)
            problems += 1
            continue
        bad_audio = 0
        if check_audio:
            for utterance in tqdm(manifest, desc=f"audio of {path.name}", unit="file"):
                try:
                    info = audio_info(manifest.audio_path(utterance))
                except AudioError as error:
                    logger.error("%s: utterance %s: %s", path, utterance.id, error)
                    bad_audio += 1
                    continue
                if abs(info.duration - utterance.duration) > 0.05:
                    logger.error(
                        "%s: utterance %s: duration %.3f s in the manifest, %.3f s in the file",
                        path, utterance.id, utterance.duration, info.duration,
                    )  # fmt: skip
                    bad_audio += 1
        problems += bad_audio
        logger.info(
            "%s: %d utterances, %.2f h, %d intents%s%s",
            path, len(manifest), manifest.total_duration / 3600, len({u.intent for u in manifest}),
            "" if labels else " (no labels.json beside it)",
            f", {bad_audio} bad audio file(s)" if check_audio else "",
        )  # fmt: skip
    return problems


def features(
    manifest: Path,
    out: Path,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    options: dict | None = None,
) -> int:
    """Build (or reuse) the feature store of one manifest; under torchrun every rank takes part."""
    from pipeline import distributed
    from pipeline.config import ConfigError, load_config, to_dict
    from pipeline.feature_store import ExtractionOptions, FeatureStoreError, compute_feature_store
    from pipeline.features import FbankConfig, resolve_device
    from pipeline.manifest import ManifestError

    try:
        config = load_config(FbankConfig, config_path, overrides, section="features")
        extraction = ExtractionOptions(**(options or {}))
        device = resolve_device(extraction.device)
    except (ConfigError, ValueError) as error:
        logger.error("%s", error)
        return 2
    logger.info("feature config: %s", to_dict(config))
    rank, world_size = distributed.init_distributed(device)
    try:
        store = compute_feature_store(manifest, out, config, extraction)
    except (FeatureStoreError, ManifestError) as error:
        logger.error("%s", error)
        return 1
    finally:
        distributed.shutdown()
    if rank == 0:
        logger.info("%s: %d utterances, %d frames", out, len(store), store.meta["total_frames"])
    return 0


def _features_command(args: argparse.Namespace) -> int:
    return features(
        args.manifest,
        args.out,
        args.config,
        args.set,
        {
            "device": args.device,
            "batch_seconds": args.batch_seconds,
            "num_workers": args.num_workers,
            "strict": args.strict,
        },
    )


def train(
    data: Path,
    features_root: Path,
    out: Path,
    teacher_targets: Path | None = None,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    epoch_budget: int | None = None,
) -> int:
    """Train one student from ``DATA/{train,valid}.jsonl`` and ``FEATURES/{train,valid}/`` stores."""
    from pipeline import distributed
    from pipeline.config import ConfigError
    from pipeline.feature_store import FeatureStoreError
    from pipeline.features import resolve_device
    from pipeline.labels import LabelError
    from pipeline.manifest import ManifestError
    from pipeline.train import TrainingError, TrainInputs, load_experiment_config, train_student

    try:
        config = load_experiment_config(config_path, overrides)
        device = resolve_device(config.train.device)
    except (ConfigError, ValueError) as error:
        logger.error("%s", error)
        return 2
    inputs = TrainInputs(
        train_manifest=data / "train.jsonl",
        valid_manifest=data / "valid.jsonl",
        train_features=features_root / "train",
        valid_features=features_root / "valid",
        teacher_targets=teacher_targets,
    )
    logger.info("experiment config: %s", config.to_dict())
    distributed.init_distributed(device)
    try:
        metrics = train_student(inputs, out, config, epoch_budget)
    except (TrainingError, FeatureStoreError, ManifestError, LabelError) as error:
        logger.error("%s", error)
        return 1
    finally:
        distributed.shutdown()
    logger.info("%s: %s", out, metrics)
    return 0


def _train_command(args: argparse.Namespace) -> int:
    return train(
        args.data, args.features, args.out, args.teacher_targets, args.config, args.set, args.epoch_budget
    )


TEACHER_DATA_HELP = (
    "a folder with manifests/<split>.jsonl and labels.json (as data_prep writes), or that manifests folder"
)


def _teacher_config(config_path: Path | None, overrides: list[str] | None, device: str | None):
    """The ``teacher`` section of a config file, with overrides and ``--device`` applied."""
    import dataclasses

    from pipeline.config import load_config
    from pipeline.teacher import TeacherConfig

    config = load_config(TeacherConfig, config_path, overrides, section="teacher")
    return dataclasses.replace(config, device=device) if device else config


def teacher_train(
    data: Path,
    out: Path,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> int:
    """Fine-tune the teacher on the splits of a data folder (train and valid required) into ``out``."""
    from pipeline.config import ConfigError
    from pipeline.labels import LabelError
    from pipeline.manifest import ManifestError
    from pipeline.teacher import TeacherError, find_manifests, train_teacher

    try:
        config = _teacher_config(config_path, overrides, device)
    except (ConfigError, ValueError) as error:
        logger.error("%s", error)
        return 2
    try:
        train_teacher(find_manifests(data), out, config)
    except (TeacherError, ManifestError, LabelError, ValueError, OSError) as error:
        logger.error("%s", error)
        return 1
    return 0


def _parse_layers(text: str) -> list[int] | None:
    """``all`` -> None (every layer), ``none`` -> [], ``2,4,6`` -> [2, 4, 6]."""
    if text.strip().lower() == "all":
        return None
    if text.strip().lower() == "none":
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--layers must be 'all', 'none' or numbers like 2,4,6, got {text!r}") from None


def teacher_export(
    data: Path,
    out: Path,
    model: str | None = None,
    pretrained: bool = False,
    layers: str = "all",
    pooling: str | None = None,
    splits: str | None = None,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> int:
    """Export teacher targets for the transcripts of a data folder's splits into ``out``."""
    from pipeline.config import ConfigError
    from pipeline.labels import LabelError
    from pipeline.manifest import ManifestError
    from pipeline.teacher import TeacherError, find_manifests
    from pipeline.teacher_targets import export_targets

    try:
        config = _teacher_config(config_path, overrides, device)
        wanted_layers = _parse_layers(layers)
    except (ConfigError, ValueError) as error:
        logger.error("%s", error)
        return 2
    if not pretrained and not model:
        logger.error(
            "slukd teacher export: --model (a fine-tuned teacher dir) is required unless --pretrained"
        )
        return 2
    try:
        manifests = find_manifests(data)
        if splits:
            names = [name.strip() for name in splits.split(",") if name.strip()]
            unknown = [name for name in names if name not in manifests]
            if unknown:
                raise TeacherError(
                    f"{data}: no split(s) {', '.join(unknown)}; available: {', '.join(manifests)}"
                )
            manifests = {name: manifests[name] for name in names}
        export_targets(
            model if model is not None else config.model,
            manifests,
            out,
            layers=wanted_layers,
            pooling=pooling,
            device=config.device,
            pretrained=pretrained,
            batch_size=config.eval_batch_size,
            max_length=config.max_length if pretrained else None,
        )
    except (TeacherError, ManifestError, LabelError, ValueError, OSError) as error:
        logger.error("%s", error)
        return 1
    return 0


def _teacher_train_command(args: argparse.Namespace) -> int:
    return teacher_train(args.data, args.out, args.config, args.set, args.device)


def _teacher_export_command(args: argparse.Namespace) -> int:
    return teacher_export(
        args.data, args.out, args.model, args.pretrained, args.layers, args.pooling, args.splits,
        args.config, args.set, args.device,
    )  # fmt: skip


def _add_teacher_parser(commands: argparse._SubParsersAction) -> None:
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
    train_parser.set_defaults(handler=_teacher_train_command)

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
    export_parser.set_defaults(handler=_teacher_export_command)


def evaluate(
    model: Path,
    data: Path,
    split: str,
    teacher: Path | None = None,
    options: dict | None = None,
    out: Path | None = None,
    force: bool = False,
) -> int:
    """Evaluate a student or teacher model dir on one split (``pipeline.evaluate.evaluate``)."""
    from pipeline.evaluate import EvaluateConfig, EvaluationError
    from pipeline.evaluate import evaluate as evaluate_model
    from pipeline.feature_store import FeatureStoreError
    from pipeline.labels import LabelError
    from pipeline.manifest import ManifestError

    try:
        config = EvaluateConfig(**(options or {}))
    except (TypeError, ValueError) as error:
        logger.error("%s", error)
        return 2
    try:
        evaluate_model(model, data, split, config, teacher, out, force)
    except (EvaluationError, ManifestError, LabelError, FeatureStoreError, OSError) as error:
        logger.error("%s", error)
        return 1
    return 0


def _number_list(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"slukd evaluate: {what} must be numbers like 20,10,0, got {text!r}") from None


def _evaluate_command(args: argparse.Namespace) -> int:
    options = {
        "snrs": _number_list(args.snrs, "--snrs"),
        "noise_types": tuple(part.strip() for part in args.noise_types.split(",") if part.strip()),
        "noise": not args.no_noise,
        "speed": not args.no_speed,
        "device": args.device,
        "seed": args.seed,
    }
    return evaluate(args.model, args.data, args.split, args.teacher, options, args.out, args.force)


def report(experiment: Path, out: Path | None = None) -> int:
    """Gather every model's eval files under an experiment folder into a report (``pipeline.report``)."""
    from pipeline.report import ReportError, write_report

    try:
        write_report(experiment, out)
    except (ReportError, OSError) as error:
        logger.error("%s", error)
        return 1
    return 0


def _report_command(args: argparse.Namespace) -> int:
    return report(args.experiment, args.out)


def _add_evaluate_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd evaluate`` and ``slukd report``."""
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a student or teacher on one split: metrics, noise sweep, WER, speed",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="a student or teacher model dir")
    parser.add_argument("--data", type=Path, required=True, help=TEACHER_DATA_HELP)
    parser.add_argument("--split", required=True, help="which manifest, e.g. test")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a fine-tuned teacher dir: report agreement with its predictions")  # fmt: skip
    parser.add_argument("--snrs", default="20,15,10,5,0", help="SNRs in dB of the noise sweep")
    parser.add_argument("--noise-types", default="white,babble", help="noise types of the sweep")
    parser.add_argument("--no-noise", action="store_true", help="skip the noise sweep")
    parser.add_argument("--no-speed", action="store_true", help="skip the latency/throughput measurements")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise")
    parser.add_argument("--out", type=Path, default=None, help="folder for <split>.json (None: MODEL/eval)")
    parser.add_argument("--force", action="store_true", help="recompute even if an identical eval exists")
    parser.set_defaults(handler=_evaluate_command)

    report_parser = commands.add_parser(
        "report",
        help="report.md, report.html, metrics.json and figures from the eval files of an experiment",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report_parser.add_argument("experiment", type=Path, help="experiment folder (teacher/, student_*/, ...)")
    report_parser.add_argument(
        "--out", type=Path, default=None, help="output folder (None: EXPERIMENT/report)"
    )
    report_parser.set_defaults(handler=_report_command)


PREDICT_INPUTS_HELP = (
    "audio files (wav/flac/ogg/mp3/..., any sample rate, stereo is mixed down); a directory (its audio "
    "files, recursive, sorted); @LIST (a text file, one path per line, # comments); - (paths on stdin)"
)


def predict(
    model: Path,
    inputs: list[str],
    top_k: int = 5,
    threshold: float | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    max_seconds: float | None = None,
) -> int:
    """One JSON line per input file on stdout (``pipeline.inference.IntentRecognizer``).

    A file that cannot be used gets ``{"file": ..., "error": ...}``; returns 1 if any did.
    """
    import json

    from pipeline.inference import MAX_SECONDS, InferenceError, IntentRecognizer, expand_inputs

    if not inputs:
        logger.error("slukd predict: no inputs; give audio files, directories, @LIST or -")
        return 2
    try:
        recognizer = IntentRecognizer.from_pretrained(model, device, max_seconds or MAX_SECONDS)
    except (InferenceError, ValueError) as error:
        logger.error("%s", error)
        return 1
    expanded = expand_inputs(inputs, sys.stdin)
    failures = 0
    usable = [path for path, problem in expanded if problem is None]
    results = iter(recognizer.predict_files(usable, top_k, threshold, batch_size))
    for path, problem in expanded:
        if problem is None:
            path, result = next(results)
            if isinstance(result, Exception):
                problem = str(result)
        if problem is not None:
            failures += 1
            logger.error("%s", problem if problem.startswith(path) else f"{path}: {problem}")
            line = {"file": path, "error": problem}
        else:
            line = {"file": path, **result.to_dict()}
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    if failures:
        logger.error("%d of %d inputs failed", failures, len(expanded))
    return 1 if failures else 0


def _predict_command(args: argparse.Namespace) -> int:
    inputs = list(args.inputs) + ([f"@{args.list}"] if args.list else [])
    return predict(
        args.model, inputs, args.top_k, args.threshold, args.batch_size, args.device, args.max_seconds
    )


def export(
    model: Path,
    format: str = "onnx",
    int8: bool = False,
    out: Path | None = None,
    verify: list[str] | None = None,
    max_verify_files: int = 200,
    tolerance: float | None = None,
) -> int:
    """Export a student model dir for deployment (``pipeline.export.export_model``)."""
    from pipeline.audio import AudioError
    from pipeline.export import ExportError, export_model
    from pipeline.inference import InferenceError
    from pipeline.manifest import ManifestError

    try:
        result = export_model(model, out, format, int8, verify, max_verify_files, tolerance)
    except (ExportError, InferenceError, ManifestError, AudioError, OSError) as error:
        logger.error("%s", error)
        return 1
    logger.info("%s (+ %s)", result.onnx_path, result.sidecar_path.name)
    return 0


def _export_command(args: argparse.Namespace) -> int:
    return export(
        args.model, args.format, args.int8, args.out, args.verify, args.max_verify_files, args.tolerance
    )


def _add_deployment_parsers(commands: argparse._SubParsersAction) -> None:
    """``slukd predict`` and ``slukd export``."""
    parser = commands.add_parser(
        "predict",
        help="intent of audio files: one JSON line per file on stdout",
        description="One JSON line per file: file, intent, confidence, top_k, slots, duration "
        "(and transcript with a CTC head); an unusable file gets {file, error} and the exit status is 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="a student model dir or an exported .onnx")
    parser.add_argument("inputs", nargs="*", help=PREDICT_INPUTS_HELP)
    parser.add_argument("--list", type=Path, default=None, help="a text file of paths, one a line (as @LIST)")
    parser.add_argument("--top-k", type=int, default=5, help="(intent, probability) pairs per line")
    parser.add_argument("--threshold", type=float, default=None,
                        help="below this probability the intent is 'unknown' (None: always the best)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="files per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longer files are refused (None: pipeline.inference.MAX_SECONDS, 60 s)")  # fmt: skip
    parser.set_defaults(handler=_predict_command)

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
    export_parser.set_defaults(handler=_export_command)


def _prepare_command(args: argparse.Namespace) -> int:
    return prepare(args.corpus, args.corpus_args)


def _validate_command(args: argparse.Namespace) -> int:
    return 1 if validate(args.manifests, args.labels, args.check_audio) else 0


def build_parser() -> argparse.ArgumentParser:
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
    prepare_parser.set_defaults(handler=_prepare_command)

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
    validate_parser.set_defaults(handler=_validate_command)

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
    features_parser.set_defaults(handler=_features_command)

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
    train_parser.set_defaults(handler=_train_command)
    _add_teacher_parser(commands)
    _add_deployment_parsers(commands)
    _add_evaluate_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
