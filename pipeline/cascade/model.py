"""The cascade baseline: an off-the-shelf ASR transcribes, the fine-tuned teacher classifies.

A cascade is a small model dir that names its two parts (it holds no weights of its own)::

    config.json   {"format": "slukd-cascade", "version": 1,
                   "asr": {backend, model, compute_type, beam_size, ...},   # pipeline.cascade.asr.AsrConfig
                   "teacher": "../teacher",     # a fine-tuned teacher dir, relative to this dir or absolute
                   "labels": {...}}             # the teacher's label map when the cascade was made
    labels.json   the same label map, as every model dir has it

:func:`create_cascade` writes one, :func:`load_cascade` loads it into a :class:`CascadeModel`,
whose ``predict`` takes 16 kHz waveforms and returns the intent logits and the hypotheses. A
hypothesis is normalised with :func:`pipeline.data.text.normalize_transcript`, the normaliser the
teacher was trained with, before the teacher reads it; an empty hypothesis is classified too
(the teacher sees only its special tokens), as a deployed cascade would.

The model size of a cascade is the ASR's weights plus the teacher's (:meth:`CascadeModel.size`).
:func:`cascade_fingerprint` says, without loading anything, what a cached evaluation must match.

**ASR transcripts for an ASR-robust teacher** (:func:`transcribe_manifest`): the utterances of a
manifest with the ASR hypothesis as the transcript (same ids, intents and slots; the gold text
kept in ``gold_transcript``), so the teacher can be fine-tuned on gold plus ASR transcripts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.cascade.asr import (
    AsrConfig,
    AsrError,
    SpeechRecognizer,
    asr_fingerprint,
    load_asr,
    resolve_asr_model,
)
from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.errors import SlukdError
from pipeline.core.io import file_sha256, read_json, write_json
from pipeline.core.version import __version__
from pipeline.data.labels import LABELS_FILENAME, LabelError, LabelSet
from pipeline.data.text import normalize_transcript

logger = logging.getLogger(__name__)

CASCADE_FORMAT = "slukd-cascade"
CASCADE_VERSION = 1
CONFIG_FILE = "config.json"
TEACHER_WEIGHTS = "model.safetensors"


class CascadeError(SlukdError, ValueError):
    """A cascade dir that cannot be written or loaded (bad config, missing teacher, label maps)."""


@dataclass
class CascadeConfig:
    """A cascade dir's config.json, read and checked."""

    folder: Path  # the cascade dir
    asr: AsrConfig
    teacher: Path  # resolved teacher dir
    labels: LabelSet


class CascadeOutput(NamedTuple):
    """What :meth:`CascadeModel.predict` returns."""

    logits: np.ndarray  # float32 [N, C]
    hypotheses: list[str]  # normalised ASR text, what the teacher read
    slot_logits: dict[str, np.ndarray]  # slot -> float32 [N, classes] of the teacher's slot heads (or empty)


# ---------------------------------------------------------------------------------------------
# The cascade dir


def is_cascade_dir(folder: str | os.PathLike) -> bool:
    """True if ``folder/config.json`` declares the ``slukd-cascade`` format."""
    path = Path(folder) / CONFIG_FILE
    try:
        return path.is_file() and read_json(path).get("format") == CASCADE_FORMAT
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def _teacher_labels(teacher: Path) -> LabelSet:
    """The label map of a fine-tuned teacher dir, after checking the files a teacher dir has."""
    if not teacher.is_dir():
        raise CascadeError(f"teacher dir {teacher} not found")
    missing = [
        name for name in (CONFIG_FILE, TEACHER_WEIGHTS, LABELS_FILENAME) if not (teacher / name).is_file()
    ]
    if missing:
        raise CascadeError(f"{teacher}: not a fine-tuned teacher dir, missing {', '.join(missing)}")
    try:
        return LabelSet.load(teacher / LABELS_FILENAME)
    except LabelError as error:
        raise CascadeError(str(error)) from None


def create_cascade(
    out_dir: str | os.PathLike,
    teacher: str | os.PathLike,
    asr: AsrConfig | None = None,
    relative_teacher: bool = True,
) -> Path:
    """Write a cascade dir (config.json, labels.json, each atomically) and return it.

    Args:
        out_dir: the cascade dir; other files in it (an ``eval/`` folder) are left alone.
        teacher: a fine-tuned teacher dir (``slukd teacher train``).
        asr: the ASR (default: faster-whisper on the packaged Whisper tiny.en).
        relative_teacher: store the teacher path relative to ``out_dir`` (the experiment folder
            can then move as a whole); else absolute.

    Raises:
        CascadeError: the teacher dir is not one; AsrError: the ASR model cannot be found.
    """
    out_dir = Path(out_dir)
    asr = asr or AsrConfig()
    teacher = Path(teacher).expanduser().resolve()
    labels = _teacher_labels(teacher)
    resolve_asr_model(asr)  # a missing extra or a bad ASR folder fails now, not at evaluation
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = os.path.relpath(teacher, out_dir.resolve()) if relative_teacher else str(teacher)
    config = {
        "format": CASCADE_FORMAT,
        "version": CASCADE_VERSION,
        "asr": to_dict(asr),
        "teacher": stored,
        "labels": labels.to_dict(),
        "slukd_version": __version__,
    }
    if not (out_dir / CONFIG_FILE).is_file() or read_json(out_dir / CONFIG_FILE) != config:
        labels.save(out_dir / LABELS_FILENAME)
        write_json(out_dir / CONFIG_FILE, config)  # last: a dir with config.json is complete
    logger.info("cascade %s: ASR %s, teacher %s", out_dir, asr.backend, teacher)
    return out_dir


def read_cascade_config(folder: str | os.PathLike) -> CascadeConfig:
    """Read and check a cascade dir's config.json (nothing is loaded)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CascadeError(f"{folder}: not a cascade dir (no {CONFIG_FILE})")
    try:
        data = read_json(path)
    except json.JSONDecodeError as error:
        raise CascadeError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict) or data.get("format") != CASCADE_FORMAT:
        raise CascadeError(f"{path}: not a {CASCADE_FORMAT} config")
    if data.get("version") != CASCADE_VERSION:
        raise CascadeError(f"{path}: version {data.get('version')!r}, this slukd reads {CASCADE_VERSION}")
    try:
        asr = from_dict(AsrConfig, data["asr"])
        labels = LabelSet.from_dict(data["labels"])
        teacher = Path(data["teacher"]).expanduser()
    except KeyError as error:
        raise CascadeError(f"{path}: missing key {error}") from None
    except (ConfigError, AsrError, LabelError, TypeError) as error:
        raise CascadeError(f"{path}: {' '.join(str(error).split())}") from None
    teacher = (teacher if teacher.is_absolute() else folder / teacher).resolve()
    return CascadeConfig(folder, asr, teacher, labels)


def cascade_fingerprint(folder: str | os.PathLike) -> dict[str, Any]:
    """What decides a cascade's outputs, without loading it: the ASR's identity and decoding
    settings, and the teacher's weights hash."""
    config = read_cascade_config(folder)
    weights = config.teacher / TEACHER_WEIGHTS
    if not weights.is_file():
        raise CascadeError(f"{config.folder}: its teacher {config.teacher} has no {TEACHER_WEIGHTS}")
    _, identity = resolve_asr_model(config.asr)
    settings = {
        key: value for key, value in to_dict(config.asr).items() if key not in ("threads", "batch_size")
    }
    return {"asr": {**settings, "model": identity}, "teacher_sha256": file_sha256(weights)}


# ---------------------------------------------------------------------------------------------
# The loaded model


class CascadeModel:
    """A loaded cascade: ``predict`` waveforms into intent logits and the hypotheses."""

    def __init__(self, config: CascadeConfig, asr: SpeechRecognizer, teacher: Any) -> None:
        self.config = config
        self.asr = asr
        self.teacher = teacher  # pipeline.teacher.model.Teacher
        self.labels = config.labels

    @property
    def name(self) -> str:
        return f"{self.asr.name} -> teacher {self.config.teacher.name}"

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """The normalised hypothesis of each 16 kHz waveform."""
        return [normalize_transcript(text) for text in self.asr.transcribe(waveforms)]

    def classify(self, hypotheses: Sequence[str]) -> np.ndarray:
        """float32 intent logits ``[N, C]`` of the teacher on (normalised) hypotheses."""
        if not hypotheses:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.teacher.logits([normalize_transcript(text) for text in hypotheses])

    def classify_with_slots(self, hypotheses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The teacher's intent logits ``[N, C]`` and slot logits (slot -> ``[N, classes]``) on hypotheses."""
        if not hypotheses:
            return np.zeros((0, len(self.labels)), np.float32), {
                name: np.zeros((0, len(self.labels.slot_classes(name))), np.float32)
                for name in self.teacher.model.slot_names
            }
        return self.teacher.outputs([normalize_transcript(text) for text in hypotheses])

    def predict(self, waveforms: Sequence[np.ndarray]) -> CascadeOutput:
        """Waveforms in, ``(logits [N, C], normalised hypotheses, slot logits)`` out."""
        hypotheses = self.transcribe(waveforms)
        logits, slots = self.classify_with_slots(hypotheses)
        return CascadeOutput(logits, hypotheses, slots)

    def predict_intents(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """The intent of each waveform."""
        best = self.predict(waveforms).logits.argmax(axis=1)
        return [self.labels.intent(int(index)) for index in best]

    def size(self) -> dict[str, int]:
        """Bytes of weights: ``asr``, ``teacher`` and their ``total``."""
        asr = self.asr.size_bytes
        teacher = (self.config.teacher / TEACHER_WEIGHTS).stat().st_size
        return {"asr": asr, "teacher": teacher, "total": asr + teacher}

    @property
    def size_bytes(self) -> int:
        return self.size()["total"]

    def num_parameters(self) -> int:
        """Weights of the ASR and of the teacher."""
        return self.asr.num_parameters + int(sum(p.numel() for p in self.teacher.model.parameters()))


def load_cascade(
    folder: str | os.PathLike, device: str = "cpu", threads: int | None = None, workers: int | None = None
) -> CascadeModel:
    """Load a cascade dir: its ASR and its teacher (which must still have the same label map).

    Args:
        folder: the cascade dir (:func:`create_cascade`).
        device: where the teacher runs (``cpu``, ``cuda``, ``auto``); the ASR's own ``device``
            setting stays as configured.
        threads: CPU threads of one transcription, overriding the config (``None``: as configured).
        workers: utterances of a batch transcribed in parallel (faster-whisper; ``None``: as configured).
    """
    from pipeline.teacher.config import TeacherError
    from pipeline.teacher.model import load_teacher

    config = read_cascade_config(folder)
    if not config.teacher.is_dir():
        raise CascadeError(f"{config.folder}: teacher dir {config.teacher} not found")
    overrides = {
        name: value for name, value in (("threads", threads), ("workers", workers)) if value is not None
    }
    if overrides:
        config.asr = from_dict(AsrConfig, {**to_dict(config.asr), **overrides})
    try:
        teacher = load_teacher(config.teacher, device)
    except TeacherError as error:
        raise CascadeError(f"{config.folder}: {error}") from None
    if teacher.labels.intents != config.labels.intents:
        raise CascadeError(
            f"{config.folder}: the label map of the teacher {config.teacher} ({len(teacher.labels)} intents) is "
            f"not the one the cascade was made with ({len(config.labels)}); run create_cascade again"
        )
    return CascadeModel(config, load_asr(config.asr), teacher)


# ---------------------------------------------------------------------------------------------
# ASR transcripts of a manifest (for an ASR-robust teacher)


def _read_partial(path: Path) -> dict[str, str]:
    """Hypotheses already written by an interrupted run; a torn last line is dropped."""
    done: dict[str, str] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            done[str(row["id"])] = str(row["hypothesis"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def transcribe_manifest(
    manifest_path: str | os.PathLike,
    out_path: str | os.PathLike,
    asr: AsrConfig | SpeechRecognizer | None = None,
    chunk_size: int = 16,
    force: bool = False,
    max_utterances: int = 0,
    seed: int = 0,
) -> Path:
    """Write a manifest whose transcripts are the (normalised) ASR hypotheses of ``manifest_path``.

    Ids, audio, intents, slots and speakers are kept, and the gold text goes to the extra field
    ``gold_transcript``. Utterances whose hypothesis normalises to nothing are left out (there is
    no text to learn from); ``OUT.asr.json`` (beside ``OUT``, named after its stem) records the
    fingerprint, the counts and the WER against the gold transcripts. A rerun with the same
    manifest (sha256) and ASR settings is skipped; an interrupted run resumes from the
    hypotheses it had appended to a hidden ``.partial`` file.

    Args:
        manifest_path: the manifest to transcribe (for instance the train split).
        out_path: the manifest to write; keep it out of the data's manifests folder, where it
            would read as one more split.
        asr: the ASR settings or a loaded ASR (default: faster-whisper on the packaged tiny.en).
        chunk_size: utterances between two appends to the partial file.
        force: transcribe again even when a finished run matches.
        max_utterances: transcribe a seeded random subset of this many utterances (kept in
            manifest order; 0: all), for a time budget.
        seed: seeds the subset.

    Returns:
        ``out_path``.
    """
    from tqdm import tqdm

    from pipeline.data.audio import load_audio
    from pipeline.data.manifest import Utterance, read_manifest, write_manifest
    from pipeline.scoring.metrics import error_rates

    manifest_path, out_path = Path(manifest_path), Path(out_path)
    asr = asr or AsrConfig()
    asr_settings = asr.fingerprint() if isinstance(asr, SpeechRecognizer) else asr_fingerprint(asr)
    subset = {"max_utterances": max_utterances, "seed": seed} if max_utterances else None
    fingerprint = {"manifest_sha256": file_sha256(manifest_path), "asr": asr_settings, "subset": subset}
    fingerprint = json.loads(json.dumps(fingerprint))
    meta_path = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".asr.json")
    if not force and out_path.is_file() and meta_path.is_file():
        try:
            if read_json(meta_path).get("fingerprint") == fingerprint:
                logger.info("%s: ASR transcripts already written with these settings, skipping", out_path)
                return out_path
        except (json.JSONDecodeError, OSError, AttributeError):
            pass
    manifest = read_manifest(manifest_path)
    if 0 < max_utterances < len(manifest):
        chosen = np.random.default_rng(seed).choice(len(manifest), max_utterances, replace=False)
        manifest.utterances = [manifest[int(i)] for i in sorted(chosen)]
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    partial = out_path.with_name(f".{out_path.name}.{key}.partial")
    done = {} if force else _read_partial(partial)
    todo = [u for u in manifest if u.id not in done]
    if done:
        logger.info(
            "%s: resuming, %d of %d utterances already transcribed", out_path, len(done), len(manifest)
        )
    if todo:
        recognizer = asr if isinstance(asr, SpeechRecognizer) else load_asr(asr)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "w", encoding="utf-8") as stream:  # rewritten whole: no torn line survives
            for identifier, text in done.items():
                stream.write(json.dumps({"id": identifier, "hypothesis": text}, ensure_ascii=False) + "\n")
            for start in tqdm(
                range(0, len(todo), chunk_size), desc=f"ASR {manifest_path.name}", unit="chunk"
            ):
                chunk = todo[start : start + chunk_size]
                texts = recognizer.transcribe([load_audio(manifest.audio_path(u)) for u in chunk])
                for utterance, text in zip(chunk, texts, strict=True):
                    done[utterance.id] = text
                    stream.write(
                        json.dumps({"id": utterance.id, "hypothesis": text}, ensure_ascii=False) + "\n"
                    )
                stream.flush()
                os.fsync(stream.fileno())

    rows, empty = [], []
    for utterance in manifest:
        hypothesis = normalize_transcript(done[utterance.id])
        if not hypothesis:
            empty.append(utterance.id)
            continue
        audio = os.path.relpath(manifest.audio_path(utterance).resolve(), out_path.parent.resolve())
        rows.append(Utterance(
            utterance.id, audio, utterance.duration, utterance.sample_rate, hypothesis, utterance.intent,
            dict(utterance.slots), utterance.speaker, {**utterance.extra, "gold_transcript": utterance.transcript},
        ))  # fmt: skip
    if not rows:
        raise CascadeError(f"{manifest_path}: the ASR heard nothing in any of the {len(manifest)} utterances")
    rates = error_rates(
        [normalize_transcript(u.transcript) for u in manifest],
        [normalize_transcript(done[u.id]) for u in manifest],
    )
    write_manifest(out_path, rows)
    write_json(meta_path, {
        "manifest": str(manifest_path), "fingerprint": fingerprint, "utterances": len(manifest),
        "written": len(rows), "empty_hypotheses": empty, **rates,
    })  # fmt: skip
    partial.unlink(missing_ok=True)
    logger.info(
        "%s: %d utterances (%d with an empty hypothesis left out), WER %.3f against the gold transcripts",
        out_path, len(rows), len(empty), rates["wer"],
    )  # fmt: skip
    return out_path
