"""Front-ends: 16 kHz mono waveforms -> what a student family eats.

A front-end works on a padded batch, on the waveforms' own device, without a Python loop over
utterances. It has two steps: :meth:`FrontEnd.extract` gives the raw features a feature store
keeps, and :meth:`FrontEnd.normalize` applies the model's own statistics (global CMVN for the
fbank front-end, nothing where a front-end has none). ``frontend(waveforms, lengths)`` does both.

The front-end's config, statistics included, travels in every student model dir
(:mod:`pipeline.serving.model_dir`), so training, validation, evaluation, inference and the ONNX graph
all normalise the same way: with the statistics of the model's training split.

    frontend = build_frontend({"name": "fbank", "num_mel_bins": 80})
    frontend = frontend.with_statistics(train_store.statistics)   # CMVN of the train split
    features, frames = frontend(waveforms, lengths)

New front-ends subclass :class:`FrontEnd` and register with :func:`register_frontend` in their
own module; :data:`FRONTEND_MODULES` names that module, so :func:`build_frontend` imports it on
first use (a model dir or feature store of any front-end loads in a fresh process).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.errors import SlukdError
from pipeline.core.registry import lookup
from pipeline.data.audio import SAMPLE_RATE
from pipeline.frontends.fbank import (
    FLOAT_EPSILON,
    FbankConfig,
    FbankExtractor,
    fbank_analysis_matrix,
    frame_counts,
    mel_banks,
)

FRONTENDS: dict[str, type[FrontEnd]] = {}
# front-end name -> the module that registers it (imported on first use, as students.FAMILY_MODULES)
FRONTEND_MODULES = {
    "fbank": "pipeline.frontends.base",
    "whisper_logmel": "pipeline.frontends.whisper_logmel",
    "waveform": "pipeline.students.hf",
}


class FrontEndError(SlukdError):
    """A front-end config that names no known front-end or does not fit it."""


def valid_frames(lengths: Tensor, max_frames: int) -> Tensor:
    """``[batch, max_frames, 1]`` float mask: 1 on each utterance's frames, 0 on padding."""
    frames = torch.arange(max_frames, device=lengths.device)
    return (frames[None, :] < lengths[:, None]).unsqueeze(-1).float()


def pad_to_length(waveforms: Tensor, min_samples: int) -> Tensor:
    """``waveforms [batch, samples]`` right-padded with zeros to at least ``min_samples`` samples.

    Traceable: the output length follows the input length in an exported graph (a Python
    ``if`` on the shape would be frozen at the traced example's length).
    """
    if min_samples <= 0:
        return waveforms
    from torch.onnx.operators import shape_as_tensor

    size = shape_as_tensor(waveforms)[1].clamp_min(min_samples)
    return torch.cat([waveforms, waveforms.new_zeros(waveforms.shape[0], min_samples)], dim=1)[:, :size]


class FrontEnd(abc.ABC):
    """Waveforms ``[batch, samples]`` + lengths -> features ``[batch, frames, feature_dim]`` + frames."""

    name: ClassVar[str]
    sample_rate: int = SAMPLE_RATE
    feature_dim: int

    @abc.abstractmethod
    def extract(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Raw features (zero past each length) and frame counts, on the waveforms' device."""

    def normalize(self, features: Tensor, lengths: Tensor) -> Tensor:
        """Apply the model's statistics (identity for a front-end without any)."""
        return features

    def __call__(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        features, frames = self.extract(waveforms, lengths)
        return self.normalize(features, frames), frames

    @abc.abstractmethod
    def frame_counts(self, num_samples: Tensor) -> Tensor:
        """Frames :meth:`extract` yields for waveforms of these lengths."""

    uses_statistics: ClassVar[bool] = False  # normalize() needs statistics of the training data

    def missing_statistics(self) -> bool:
        """Whether this front-end uses statistics but has none yet."""
        return False

    def with_statistics(self, statistics: dict[str, Any]) -> FrontEnd:
        """A copy normalising with a store's statistics (``{"mean": [...], "std": [...]}``); a
        front-end without statistics returns itself."""
        return self

    def graph_module(self, min_frames: int = 1) -> nn.Module:
        """The whole front-end (:meth:`__call__`) as a traceable module for ONNX export, giving at
        least ``min_frames`` frames even for an empty input (the student's minimum).

        Raises:
            FrontEndError: this front-end has no export form.
        """
        raise FrontEndError(f"the {self.name} front-end has no ONNX export form")

    @abc.abstractmethod
    def extraction_config(self) -> dict[str, Any]:
        """JSON-able config of :meth:`extract` alone (what a feature store's content depends on), with ``name``."""

    def to_config(self) -> dict[str, Any]:
        """JSON-able config including ``name`` and any statistics."""
        return self.extraction_config()

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any]) -> FrontEnd:
        """The front-end a :meth:`to_config` dict describes."""


def register_frontend(cls: type[FrontEnd]) -> type[FrontEnd]:
    """Class decorator: make ``cls`` buildable by its ``name``."""
    FRONTENDS[cls.name] = cls
    return cls


def frontend_class(name: str) -> type[FrontEnd]:
    """The class of the front-end called ``name`` (importing its module on first use).

    Raises:
        FrontEndError: an unknown name, or its module cannot be imported (a missing package).
    """
    return lookup("front-end", name, FRONTENDS, FRONTEND_MODULES, FrontEndError)


def build_frontend(config: dict[str, Any]) -> FrontEnd:
    """The front-end ``config["name"]`` names, built from the rest of ``config``.

    Raises:
        FrontEndError: an unknown name or settings that do not fit it.
    """
    name = config.get("name")
    cls = frontend_class(name)
    try:
        return cls.from_config(config)
    except (ConfigError, ValueError, TypeError) as error:
        raise FrontEndError(f"front-end {name!r}: {error}") from None


@register_frontend
class FbankFrontEnd(FrontEnd):
    """Kaldi-compatible log-mel filterbank (:class:`~pipeline.frontends.fbank.FbankExtractor`) + global CMVN."""

    name = "fbank"
    uses_statistics = True

    def __init__(self, config: FbankConfig | None = None, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> None:  # fmt: skip
        self.config = config or FbankConfig()
        self.sample_rate = self.config.sample_rate
        self.feature_dim = self.config.num_mel_bins
        self.extractor = FbankExtractor(self.config)
        if (mean is None) != (std is None):
            raise ValueError("CMVN needs both mean and std")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        for values in (self.mean, self.std):
            if values is not None and values.shape != (self.feature_dim,):
                raise ValueError(f"CMVN statistics have shape {values.shape}, not ({self.feature_dim},)")
        self._device_statistics: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def extract(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.extractor.extract_batch(waveforms, lengths)

    def statistics_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """CMVN ``mean`` and ``std`` as float32 tensors on ``device``."""
        if self.mean is None or self.std is None:
            raise FrontEndError("the fbank front-end has no CMVN statistics (take them from the train store)")
        if device not in self._device_statistics:
            self._device_statistics[device] = (
                torch.as_tensor(self.mean, device=device),
                torch.as_tensor(self.std, device=device),
            )
        return self._device_statistics[device]

    def normalize(self, features: Tensor, lengths: Tensor) -> Tensor:
        if self.mean is None:
            return features
        mean, std = self.statistics_on(features.device)
        return ((features - mean) / std) * valid_frames(lengths, features.shape[1])

    def frame_counts(self, num_samples: Tensor) -> Tensor:
        return frame_counts(num_samples, self.config)

    def missing_statistics(self) -> bool:
        return self.mean is None

    def with_statistics(self, statistics: dict[str, Any]) -> FbankFrontEnd:
        return FbankFrontEnd(self.config, statistics["mean"], statistics["std"])

    def graph_module(self, min_frames: int = 1) -> nn.Module:
        mean, std = self.statistics_on(torch.device("cpu"))
        return GraphFbank(self.config, mean, std, min_frames)

    def extraction_config(self) -> dict[str, Any]:
        return {"name": self.name, **to_dict(self.config)}

    def to_config(self) -> dict[str, Any]:
        cmvn = None
        if self.mean is not None and self.std is not None:
            cmvn = {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}
        return {**self.extraction_config(), "cmvn": cmvn}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FbankFrontEnd:
        settings = {key: value for key, value in config.items() if key not in ("name", "cmvn")}
        cmvn = config.get("cmvn") or {}
        return cls(from_dict(FbankConfig, settings), cmvn.get("mean"), cmvn.get("std"))


class GraphFbank(nn.Module):
    """:class:`FbankFrontEnd` (fbank + CMVN) as export-friendly ops: the DFT as a strided conv1d.

    Every per-frame linear step (DC offset removal, pre-emphasis, window, real DFT) is one
    precomputed matrix (:func:`~pipeline.frontends.fbank.fbank_analysis_matrix`), followed by the power
    spectrum, mel banks, log floor and the model's global CMVN.
    """

    def __init__(self, config: FbankConfig, mean: Tensor, std: Tensor, min_frames: int = 1) -> None:
        super().__init__()
        if config.dither > 0:
            raise FrontEndError("an exported filterbank has no dither; export a model with dither=0")
        self.config = config
        self.size, self.shift = config.window_size, config.window_shift
        analysis = torch.from_numpy(fbank_analysis_matrix(config)).float()
        self.register_buffer("analysis", analysis[:, None, :].contiguous())  # [2 * bins, 1, window]
        self.register_buffer("banks", mel_banks(config).contiguous())  # [bins, mel]
        self.register_buffer("mean", mean.detach().float().cpu().clone())
        self.register_buffer("inverse_std", 1.0 / std.detach().float().cpu())
        self.bins = analysis.shape[0] // 2
        # Right padding so that even an empty input yields min_frames frames: the student's own
        # "pad to the minimum" branch depends on a shape, which a traced graph cannot keep.
        self.padding = (max(min_frames, 1) - 1) * self.shift + self.size

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        padded = nn.functional.pad(waveforms, (0, self.padding))
        spectrum = nn.functional.conv1d(padded.unsqueeze(1), self.analysis, stride=self.shift)
        real, imaginary = spectrum[:, : self.bins], spectrum[:, self.bins :]  # [batch, bins, frames]
        power = (real * real + imaginary * imaginary).transpose(1, 2)
        features = torch.matmul(power, self.banks).clamp_min(FLOAT_EPSILON).log()
        counts = frame_counts(lengths, self.config)
        valid = valid_frames(counts, features.shape[1]).to(features.dtype)
        return (features - self.mean) * self.inverse_std * valid, counts


def fbank_frontend_config(config: FbankConfig) -> dict[str, Any]:
    """The front-end config of an fbank setting (no statistics)."""
    return FbankFrontEnd(config).extraction_config()


__all__ = [
    "FRONTENDS",
    "FRONTEND_MODULES",
    "FbankFrontEnd",
    "FrontEnd",
    "FrontEndError",
    "GraphFbank",
    "build_frontend",
    "fbank_frontend_config",
    "frontend_class",
    "pad_to_length",
    "register_frontend",
    "valid_frames",
]
