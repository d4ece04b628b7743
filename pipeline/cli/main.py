"""The ``slukd`` command: a thin layer over importable functions of the same names.

    slukd prepare CORPUS [options]   corpus preparation (same as python -m data_prep.CORPUS)
    slukd validate MANIFEST...       check manifests against their labels.json and audio
    slukd features --manifest M --out DIR   log-mel feature store (+ CMVN), batched on any device
    slukd train --data D --features F --out DIR   train a student (CE-only or distilled)
    slukd teacher train --data D --out DIR  fine-tune the BERT teacher on the transcripts of D
    slukd teacher export --model DIR --data D --out DIR   teacher targets, one row per transcript
    slukd predict --model DIR|model.onnx FILE|DIR|@LIST|-...   one JSON line per audio file
    slukd export --model DIR [--int8] [--verify FILE...]   ONNX (waveform in, logits out) + sidecar JSON
    slukd calibrate --model DIR --data D [--split valid] [--target 0.98]   the rejection threshold -> DIR/config.json
    slukd evaluate --model DIR --data D --split S   accuracy, noise sweep, WER, speed -> DIR/eval/S.json
    slukd report EXP_DIR             report.md/.html, metrics.json and figures of every evaluated model
    slukd cascade create --teacher DIR --out DIR   the ASR + teacher baseline as a model dir
    slukd cascade transcribe --manifest M --out OUT   ASR transcripts of a manifest (ASR-robust teacher)

Errors: every command lets a :class:`~pipeline.core.errors.SlukdError` (or an ``OSError``) through,
and :func:`main` alone turns it into one line on stderr and the exit status: 2 for bad settings
(a config, an override, an option), 1 for everything else. The parsers are declared in
:mod:`pipeline.cli.parsers`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.cli.parsers import CORPORA, build_parser
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging

logger = logging.getLogger("slukd")


class UsageError(SlukdError):
    """Bad settings on the command line or in a config file (exit status 2)."""

    exit_code = 2


@contextlib.contextmanager
def settings_errors() -> Iterator[None]:
    """Turn a ``ValueError``/``TypeError`` raised while settings are parsed into a :class:`UsageError`."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None


def prepare(corpus: str, argv: list[str]) -> int:
    """Run a corpus preparer's command line."""
    if corpus not in CORPORA:
        raise UsageError(f"slukd prepare: unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")
    return int(importlib.import_module(CORPORA[corpus]).main(argv) or 0)


def validate(manifests: list[Path], labels_path: Path | None = None, check_audio: bool = False) -> int:
    """Validate manifests (and optionally every audio file); returns the number of problems."""
    from tqdm import tqdm

    from pipeline.data.audio import AudioError, audio_info
    from pipeline.data.labels import LABELS_FILENAME, LabelError, LabelSet
    from pipeline.data.manifest import ManifestError, read_manifest

    problems = 0
    for path in manifests:
        try:  # a bad manifest is counted, and the next one is still checked
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


def features(manifest: Path, out: Path, config_path: Path | None = None, overrides: list[str] | None = None,
             options: dict | None = None, trim_silence: bool = True) -> int:  # fmt: skip
    """Build (or reuse) the feature store of one manifest; under torchrun every rank takes part."""
    from pipeline.core import distributed
    from pipeline.core.config import load_config, to_dict
    from pipeline.core.devices import resolve_device
    from pipeline.frontends.fbank import FbankConfig
    from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store

    with settings_errors():
        config = load_config(FbankConfig, config_path, overrides, section="features")
        extraction = ExtractionOptions(**(options or {}))
        device = resolve_device(extraction.device)
    logger.info("feature config: %s", to_dict(config))
    rank, _ = distributed.init_distributed(device)
    try:
        store = compute_feature_store(manifest, out, config, extraction, trim_silence)
    finally:
        distributed.shutdown()
    if rank == 0:
        logger.info("%s: %d utterances, %d frames", out, len(store), store.meta["total_frames"])
    return 0


def train(data: Path, features_root: Path, out: Path, teacher_targets: Path | None = None,
          config_path: Path | None = None, overrides: list[str] | None = None,
          epoch_budget: int | None = None) -> int:  # fmt: skip
    """Train one student from ``DATA/{train,valid}.jsonl`` and ``FEATURES/{train,valid}/`` stores."""
    from pipeline.core import distributed
    from pipeline.core.devices import resolve_device
    from pipeline.training.train import TrainInputs, load_experiment_config, train_student

    with settings_errors():
        config = load_experiment_config(config_path, overrides)
        device = resolve_device(config.train.device)
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
    finally:
        distributed.shutdown()
    logger.info("%s: %s", out, metrics)
    return 0


def _teacher_config(config_path: Path | None, overrides: list[str] | None, device: str | None) -> Any:
    """The ``teacher`` section of a config file, with overrides and ``--device`` applied."""
    from pipeline.core.config import load_config
    from pipeline.core.devices import resolve_device
    from pipeline.teacher.config import TeacherConfig

    with settings_errors():
        config = load_config(TeacherConfig, config_path, overrides, section="teacher")
        config = dataclasses.replace(config, device=device) if device else config
        resolve_device(config.device)  # a device this machine lacks is a settings error
    return config


def teacher_train(data: Path, out: Path, config_path: Path | None = None, overrides: list[str] | None = None,
                  device: str | None = None, extra_train: list[Path] | None = None) -> int:  # fmt: skip
    """Fine-tune the teacher on the splits of a data folder (train and valid required) into ``out``,
    with the transcripts of ``extra_train`` manifests beside the train split's."""
    from pipeline.data.manifest import find_manifests
    from pipeline.teacher.train import train_teacher

    config = _teacher_config(config_path, overrides, device)
    train_teacher(find_manifests(data), out, config, extra_train=extra_train or ())
    return 0


def parse_layers(text: str) -> list[int] | None:
    """``all`` -> None (every layer), ``none`` -> [], ``2,4,6`` -> [2, 4, 6]."""
    if text.strip().lower() == "all":
        return None
    if text.strip().lower() == "none":
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--layers must be 'all', 'none' or numbers like 2,4,6, got {text!r}") from None


def teacher_export(data: Path, out: Path, model: str | None = None, pretrained: bool = False, layers: str = "all",
                   pooling: str | None = None, splits: str | None = None, config_path: Path | None = None,
                   overrides: list[str] | None = None, device: str | None = None) -> int:  # fmt: skip
    """Export teacher targets for the transcripts of a data folder's splits into ``out``."""
    from pipeline.data.manifest import ManifestError, find_manifests
    from pipeline.teacher.targets import export_targets

    config = _teacher_config(config_path, overrides, device)
    wanted_layers = parse_layers(layers)
    if not pretrained and not model:
        raise UsageError(
            "slukd teacher export: --model (a fine-tuned teacher dir) is required unless --pretrained"
        )
    manifests = find_manifests(data)
    if splits:
        names = [name.strip() for name in splits.split(",") if name.strip()]
        unknown = [name for name in names if name not in manifests]
        if unknown:
            raise ManifestError(
                f"{data}: no split(s) {', '.join(unknown)}; available: {', '.join(manifests)}"
            )
        manifests = {name: manifests[name] for name in names}
    export_targets(
        model if model is not None else config.model, manifests, out, layers=wanted_layers, pooling=pooling,
        device=config.device, pretrained=pretrained, batch_size=config.eval_batch_size,
        max_length=config.max_length if pretrained else None,
    )  # fmt: skip
    return 0


def evaluate(model: Path, data: Path, split: str, teacher: Path | None = None, options: dict | None = None,
             out: Path | None = None, force: bool = False, reuse_hypotheses: Path | None = None) -> int:  # fmt: skip
    """Evaluate a student, teacher or cascade dir on one split (``pipeline.evaluation.evaluate.evaluate``).

    Comma-separated splits and model dirs run in one process (one start-up; speed on the first
    split only); students with the same frozen bottom run it once per batch
    (:mod:`pipeline.evaluation.shared_frozen`)."""
    from pipeline.core.devices import resolve_device
    from pipeline.evaluation.evaluate import EvaluateConfig
    from pipeline.evaluation.evaluate import evaluate as evaluate_model
    from pipeline.evaluation.shared_frozen import SHARED_FROZEN

    with settings_errors():
        config = EvaluateConfig(**(options or {}))
        resolve_device(config.device)
    splits = [name.strip() for name in split.split(",") if name.strip()]
    models = [Path(name.strip()) for name in str(model).split(",") if name.strip()]
    if not splits or not models:
        raise UsageError(
            f"slukd evaluate: no split in --split {split!r} or no model in --model {str(model)!r}"
        )
    if len(models) > 1 and out is not None:
        raise UsageError("slukd evaluate: --out takes one model; several write into their own eval/ folders")
    SHARED_FROZEN.enabled = len(models) > 1
    try:
        for index, name in enumerate(splits):
            settings = config if index == 0 else dataclasses.replace(config, speed=False)
            for folder in models:
                evaluate_model(folder, data, name, settings, teacher, out, force, reuse_hypotheses)
            SHARED_FROZEN.clear()
    finally:
        SHARED_FROZEN.enabled = False
        SHARED_FROZEN.clear()
    return 0


def report(experiment: Path, out: Path | None = None) -> int:
    """Gather every model's eval files under an experiment folder into a report (``pipeline.evaluation.report``)."""
    from pipeline.evaluation.report import write_report

    write_report(experiment, out)
    return 0


def predict(model: Path, inputs: list[str], top_k: int = 5, threshold: float | str | None = "auto",
            batch_size: int = 16, device: str = "cpu", max_seconds: float | None = None,
            segment: bool = False) -> int:  # fmt: skip
    """One JSON line per input file on stdout (``pipeline.serving.inference.IntentRecognizer``).

    A file that cannot be used gets ``{"file": ..., "error": ...}``; returns 1 if any did. With
    ``segment``, a line per speech segment of each file (``start``/``end`` in seconds).
    """
    from pipeline.serving.inference import MAX_SECONDS, IntentRecognizer, expand_inputs

    if not inputs:
        raise UsageError("slukd predict: no inputs; give audio files, directories, @LIST or -")
    with _as_slukd_error(ValueError):
        recognizer = IntentRecognizer.from_pretrained(model, device, max_seconds or MAX_SECONDS)
    expanded = expand_inputs(inputs, sys.stdin)
    failures = 0
    usable = [path for path, problem in expanded if problem is None]
    threshold = None if str(threshold).lower() == "none" else threshold
    if threshold not in (None, "auto") and not _is_number(threshold):
        raise UsageError(f"slukd predict: --threshold must be auto, none or a number, got {threshold!r}")
    results = iter(recognizer.predict_files(usable, top_k, threshold, batch_size) if not segment else
                   segment_results(recognizer, usable, top_k, threshold, batch_size))  # fmt: skip
    for path, problem in expanded:
        if problem is None:
            path, result = next(results)
            if isinstance(result, Exception):
                problem = str(result)
        if problem is not None:
            failures += 1
            logger.error("%s", problem if problem.startswith(path) else f"{path}: {problem}")
            lines = [{"file": path, "error": problem}]
        else:
            lines = [{"file": path, **item.to_dict()} for item in (result if segment else [result])]
        sys.stdout.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        sys.stdout.flush()
    if failures:
        logger.error("%d of %d inputs failed", failures, len(expanded))
    return 1 if failures else 0


def _is_number(text: object) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def segment_results(recognizer: Any, paths: list[str], top_k: int, threshold: float | str | None,
                    batch_size: int) -> Iterator[tuple[str, list[Any] | Exception]]:  # fmt: skip
    """``predict --segment``: each file's segment predictions, or its error."""
    from pipeline.data.audio import AudioError

    for path in paths:
        try:
            yield path, recognizer.predict_segments(path, top_k, threshold, batch_size)
        except AudioError as error:
            yield path, error


def calibrate(model: Path, data: Path, split: str = "valid", target: float = 0.98, method: str = "auto",
              temperature: float = 1.0, batch_size: int = 16, noise_types: str = "", snrs: str = "24,12") -> int:  # fmt: skip
    """Store a student's rejection threshold, chosen on ``split`` (``pipeline.serving.calibrate.calibrate``)."""
    from pipeline.augment.conditions import SWEEP_NOISE_TYPES
    from pipeline.serving.calibrate import calibrate as calibrate_model

    if split.startswith("test"):
        raise UsageError(f"slukd calibrate: choose the threshold on valid, not on {split!r}")
    kinds = tuple(part.strip() for part in noise_types.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in SWEEP_NOISE_TYPES]
    if unknown:
        raise UsageError(f"slukd calibrate: unknown noise type(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SWEEP_NOISE_TYPES)}")  # fmt: skip
    calibrate_model(model, data, split, target, method, temperature, batch_size, kinds,
                    tuple(_number_list(snrs, "--snrs")))  # fmt: skip
    return 0


@contextlib.contextmanager
def _as_slukd_error(*kinds: type[Exception]) -> Iterator[None]:
    """Report a library's own error type (e.g. a ``ValueError`` from loading a model) as a one-line error."""
    try:
        yield
    except kinds as error:
        raise SlukdError(str(error)) from None


def export(model: Path, format: str = "onnx", int8: bool = False, out: Path | None = None,
           verify: list[str] | None = None, max_verify_files: int = 200, tolerance: float | None = None) -> int:  # fmt: skip
    """Export a student model dir for deployment (``pipeline.serving.export.export_model``)."""
    from pipeline.serving.export import export_model

    result = export_model(model, out, format, int8, verify, max_verify_files, tolerance)
    logger.info("%s (+ %s)", result.onnx_path, result.sidecar_path.name)
    return 0


def _asr_config(args: argparse.Namespace, **extra: Any) -> Any:
    """The ``pipeline.cascade.asr.AsrConfig`` of the --asr-* options."""
    from pipeline.cascade.asr import AsrConfig

    with settings_errors():
        return AsrConfig(backend=args.asr_backend, model=args.asr_model, compute_type=args.compute_type,
                         beam_size=args.beam_size, **extra)  # fmt: skip


def cascade_create(teacher: Path, out: Path, asr: Any) -> int:
    """Write a cascade dir of the teacher behind the ASR (``pipeline.cascade.model.create_cascade``)."""
    from pipeline.cascade.model import create_cascade

    create_cascade(out, teacher, asr)
    return 0


def cascade_transcribe(manifest: Path, out: Path, asr: Any, max_utterances: int = 0, seed: int = 0) -> int:
    """ASR transcripts of a manifest (``pipeline.cascade.model.transcribe_manifest``)."""
    from pipeline.cascade.model import transcribe_manifest

    if max_utterances < 0:
        raise UsageError(f"--max-utterances must be >= 0 (0: all), got {max_utterances}")
    transcribe_manifest(manifest, out, asr, max_utterances=max_utterances, seed=seed)
    return 0


def _number_list(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"slukd evaluate: {what} must be numbers like 20,10,0, got {text!r}") from None


# sub-command (as cli_parsers names it) -> how its parsed arguments call the function above
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": lambda args: prepare(args.corpus, args.corpus_args),
    "validate": lambda args: 1 if validate(args.manifests, args.labels, args.check_audio) else 0,
    "features": lambda args: features(
        args.manifest, args.out, args.config, args.set,
        {"device": args.device, "batch_seconds": args.batch_seconds, "num_workers": args.num_workers,
         "strict": args.strict}, not args.no_trim_silence,
    ),
    "train": lambda args: train(
        args.data, args.features, args.out, args.teacher_targets, args.config, args.set, args.epoch_budget
    ),
    "teacher train": lambda args: teacher_train(
        args.data, args.out, args.config, args.set, args.device, args.extra_train
    ),
    "teacher export": lambda args: teacher_export(
        args.data, args.out, args.model, args.pretrained, args.layers, args.pooling, args.splits,
        args.config, args.set, args.device,
    ),
    "evaluate": lambda args: evaluate(
        args.model, args.data, args.split, args.teacher,
        {"snrs": _number_list(args.snrs, "--snrs"),
         "noise_types": tuple(part.strip() for part in args.noise_types.split(",") if part.strip()),
         "snr_reference": args.snr_reference,
         "noise": not args.no_noise, "speed": not args.no_speed, "device": args.device, "seed": args.seed,
         "max_utterances": args.max_utterances, "noisy_utterances": args.noisy_utterances,
         "latency_utterances": args.latency_utterances},
        args.out, args.force, args.reuse_hypotheses,
    ),
    "report": lambda args: report(args.experiment, args.out),
    "predict": lambda args: predict(
        args.model, list(args.inputs) + ([f"@{args.list}"] if args.list else []), args.top_k, args.threshold,
        args.batch_size, args.device, args.max_seconds, args.segment,
    ),
    "calibrate": lambda args: calibrate(
        args.model, args.data, args.split, args.target, args.method, args.temperature, args.batch_size,
        args.noise_types, args.snrs,
    ),
    "export": lambda args: export(
        args.model, args.format, args.int8, args.out, args.verify, args.max_verify_files, args.tolerance
    ),
    "cascade create": lambda args: cascade_create(args.teacher, args.out, _asr_config(args)),
    "cascade transcribe": lambda args: cascade_transcribe(
        args.manifest, args.out, _asr_config(args, workers=args.workers), args.max_utterances, args.seed
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run one ``slukd`` command; every error it raises becomes one line on stderr and an exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return COMMANDS[args.command](args)
    except SlukdError as error:
        logger.error("%s", error.one_line())
        return error.exit_code
    except OSError as error:  # a file or folder the command could not read or write
        logger.error("%s", " ".join(str(error).split()))
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
