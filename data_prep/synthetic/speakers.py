"""What every TTS engine of the built-in corpus shares: the speaker, the engine interface, errors."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import SlukdError


class EngineUnavailable(SlukdError, RuntimeError):
    """The engine's package or program is not installed here."""


class UnknownEngine(SlukdError, ValueError):
    """An engine name that is not one of :data:`ENGINES`."""


@dataclass(frozen=True)
class Speaker:
    """One fixed synthesis setting; its ``id`` names it in manifests."""

    engine: str
    voice: str
    rate: float  # espeak: words per minute; piper: length scale; kokoro: speed; flite/festival: stretch
    pitch: float = 0.0  # espeak: 0-100; flite: mean F0 in Hz; 0 keeps the voice's default
    noise: float = 0.0  # piper only: generator noise scale

    @property
    def id(self) -> str:
        parts = [self.engine, self.voice.replace("+", "-").replace("_", "-").lower(), f"r{self.rate:g}"]
        if self.pitch:
            parts.append(f"p{self.pitch:g}")
        if self.noise:
            parts.append(f"n{self.noise:g}")
        return "_".join(parts)

    def to_dict(self) -> dict:
        return {"id": self.id, **asdict(self)}


class Engine:
    """Base class: ``speakers`` lists candidate settings, ``synthesize`` renders text."""

    name = ""
    install_hint = ""

    @classmethod
    def check(cls) -> None:
        """Raise :class:`EngineUnavailable` if the engine cannot run here."""
        raise NotImplementedError

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        raise NotImplementedError

    @classmethod
    def prepare(cls) -> None:
        """Run once in the parent process before the workers start (unpack models, ...)."""

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        raise NotImplementedError


def spread(rng: np.random.Generator, low: float, high: float, step: float) -> float:
    """A uniform draw from [low, high], rounded to a multiple of ``step``."""
    return float(np.round(rng.uniform(low, high) / step) * step)


def distinct(candidates: list[Speaker], count: int) -> list[Speaker]:
    """The first ``count`` different speakers of ``candidates``."""
    unique = list(dict.fromkeys(candidates))
    return unique[:count]


def require_modules(engine: str, modules: tuple[str, ...], hint: str) -> None:
    """Raise :class:`EngineUnavailable` naming ``engine`` unless every module imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise EngineUnavailable(f"{engine}: {module} is not installed ({hint})") from None


def single_thread_onnx_session(model_path: str) -> Any:
    """An onnxruntime CPU session on one thread: one worker process per core does the parallelism."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
