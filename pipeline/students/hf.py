"""The ``hf`` student family: a Hugging Face speech encoder on raw waveforms, then an intent head.

Any encoder ``transformers.AutoModel`` builds with a convolutional feature encoder and a stack
of transformer layers: wav2vec2, HuBERT, WavLM, data2vec-audio (checked with tiny random
configs of each). The student is

    waveform (16 kHz, per-utterance zero mean / unit variance) -> HF encoder
    -> optional extra pre-LN transformer layers (pipeline.students.transformer.EncoderLayer) + final norm
    -> pooled utterance vector (mean or attention pooling) -> intent head
    (+ projection to the teacher's width, + optional character CTC head on the frames)

``student.pretrained`` is a hub name or a local folder, loaded with ``from_pretrained``. The
encoder's HF config is kept in the student's own config (``hf_config``); a student whose
``hf_config`` is set is rebuilt from it alone (``from_config``, random weights that the model
dir's state dict then overwrites), so a saved model dir never needs the hub.

Fine-tuning follows :mod:`pipeline.students.finetune`: ``freeze`` picks what of the encoder trains.
The stem is the CNN feature encoder; the feature projection, positional convolution and
pre-encoder layer norm (the embedding) train when every layer does, so ``freeze: stem`` is the
usual wav2vec2 recipe (``freeze_feature_encoder()``). Fully frozen parts run in eval mode, so a
frozen encoder is deterministic. The encoder's own SpecAugment-style time masking (``mask_time_prob`` of its
config) stays on while pretrained layers train (``spec_augment``); LayerDrop is switched off,
since distillation reads every layer.

Attention masks follow the encoder's recipe: models whose feature encoder uses group norm
(``feat_extract_norm="group"``, e.g. wav2vec2-base, HuBERT base) were trained on zero-padded
batches without a mask and get none; the others get one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from pipeline.core.errors import SlukdError
from pipeline.data.audio import SAMPLE_RATE
from pipeline.frontends.base import FrontEnd, pad_to_length, register_frontend
from pipeline.students import transformer as base
from pipeline.students.finetune import FreezeSpec, PretrainedParts, apply_freeze, hold_frozen_in_eval
from pipeline.students.finetune import parameter_groups as finetune_parameter_groups
from pipeline.students.registry import register_student
from pipeline.students.transformer import EncoderLayer, PooledHeads, StudentConfig, StudentOutput

logger = logging.getLogger(__name__)

HF_POOLINGS = ("mean", "attention")
NORMALIZE_EPSILON = 1e-7  # as Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm


class HFStudentError(SlukdError):
    """A pretrained encoder that cannot be loaded or is not a speech encoder this family runs."""


# ---------------------------------------------------------------------------------------------
# front-end


def normalize_waveforms(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """Per-utterance zero mean, unit variance over each utterance's valid samples; zero past them.

    Args:
        waveforms: ``[batch, samples]``.
        lengths: ``[batch]`` valid samples.
    """
    valid = (torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]).to(
        waveforms.dtype
    )
    count = valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
    variance = (((waveforms - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return (waveforms - mean) / torch.sqrt(variance + NORMALIZE_EPSILON) * valid


@register_frontend
class WaveformFrontEnd(FrontEnd):
    """The raw waveform as ``[batch, samples, 1]``; ``normalize`` is the per-utterance z-norm.

    The raw features are the waveform zeroed past each length, so a feature store of this
    front-end holds the audio itself; one "frame" is one sample.
    """

    name = "waveform"
    feature_dim = 1

    def __init__(self, normalize: bool = True, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"the waveform front-end runs at {SAMPLE_RATE} Hz, got sample_rate {sample_rate}"
            )
        self.do_normalize = normalize
        self.sample_rate = sample_rate

    def extract(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        valid = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
        return (waveforms * valid.to(waveforms.dtype)).unsqueeze(-1), lengths

    def normalize(self, features: Tensor, lengths: Tensor) -> Tensor:
        if not self.do_normalize:
            return features
        return normalize_waveforms(features.squeeze(-1), lengths).unsqueeze(-1)

    def frame_counts(self, num_samples: Tensor) -> Tensor:
        return num_samples

    def graph_module(self, min_frames: int = 1) -> GraphWaveform:
        """This front-end as a traceable module (:class:`GraphWaveform`), at least ``min_frames`` samples."""
        return GraphWaveform(self, min_frames)

    def extraction_config(self) -> dict[str, Any]:
        return {"name": self.name, "sample_rate": self.sample_rate}

    def to_config(self) -> dict[str, Any]:
        return {**self.extraction_config(), "normalize": self.do_normalize}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WaveformFrontEnd:
        unknown = sorted(set(config) - {"name", "sample_rate", "normalize"})
        if unknown:
            raise ValueError(f"unknown waveform front-end key(s) {', '.join(unknown)}")
        return cls(bool(config.get("normalize", True)), int(config.get("sample_rate", SAMPLE_RATE)))


class GraphWaveform(nn.Module):
    """:class:`WaveformFrontEnd` for ONNX export: inputs shorter than ``min_samples`` are zero-padded
    to it (the student pads them so in PyTorch), then the front-end runs as it is."""

    def __init__(self, frontend: WaveformFrontEnd, min_samples: int = 1) -> None:
        super().__init__()
        self.frontend = frontend
        self.min_samples = min_samples

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.frontend(pad_to_length(waveforms, self.min_samples), lengths)


# ---------------------------------------------------------------------------------------------
# the student


@dataclass
class HFStudentConfig:
    """Architecture and fine-tuning of an ``hf`` student; saved in every model dir."""

    pretrained: str = "facebook/wav2vec2-base"  # hub name or local folder (from_pretrained)
    hf_config: dict[str, Any] = field(default_factory=dict)  # filled from the encoder; set: no hub
    freeze: str = "stem"  # encoder | top:N | stem | none (pipeline.students.finetune)
    extra_layers: int = 0  # new pre-LN transformer layers on top of the encoder
    extra_heads: int = 4
    extra_feedforward: int = 0  # 0: 4 x the encoder width
    dropout: float = 0.1  # of the extra layers
    pooling: str = "mean"  # mean | attention
    spec_augment: bool = True  # the encoder's own time masking while pretrained layers train
    do_normalize: bool | None = None  # waveform z-norm; None: the pretrained folder's preprocessor says
    num_intents: int = 31  # 0 in a training config: as many as the corpus's labels.json has
    teacher_dim: int = 0  # width of the teacher's vectors; 0: no projection head
    ctc_vocab_size: int = 0  # characters + blank; 0: no CTC head
    slot_classes: dict[str, int] = field(default_factory=dict)  # slot -> classes of its head (training fills)

    def __post_init__(self) -> None:
        FreezeSpec.parse(self.freeze)
        base.check_slot_classes(self.slot_classes)
        if self.pooling not in HF_POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(HF_POOLINGS)}, got {self.pooling!r}")
        if self.extra_layers < 0:
            raise ValueError(f"extra_layers must be >= 0, got {self.extra_layers}")
        if not self.pretrained and not self.hf_config:
            raise ValueError("pretrained (a hub name or folder) or hf_config is needed")
        if self.num_intents < 0:
            raise ValueError("num_intents must be at least 1 (or 0: from the corpus's labels.json)")


def conv_output_lengths(lengths: Tensor, kernels: list[int], strides: list[int]) -> Tensor:
    """Frames left after the feature encoder's unpadded 1-D convolutions."""
    for kernel, stride in zip(kernels, strides, strict=True):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp_min(0)


def min_samples_for_frames(frames: int, kernels: list[int], strides: list[int]) -> int:
    """The fewest samples from which the feature encoder yields ``frames`` frames."""
    samples = frames
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        samples = (samples - 1) * stride + kernel
    return samples


def _load_pretrained(name: str, overrides: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(name)
        _override(config, overrides)
        return AutoModel.from_pretrained(name, config=config, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HFStudentError(
            f"cannot load the pretrained encoder {name!r} ({first_line}); a hub name needs the network or "
            "a filled Hugging Face cache, a local folder needs config.json and the weights"
        ) from None


def _build_from_config(hf_config: dict[str, Any], overrides: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    values = {key: value for key, value in hf_config.items() if key != "model_type"}
    try:
        config = AutoConfig.for_model(hf_config["model_type"], **values)
    except (KeyError, ValueError, TypeError) as error:
        raise HFStudentError(f"hf_config does not describe a transformers model ({error})") from None
    _override(config, overrides)
    return AutoModel.from_config(config, dtype=torch.float32)


def _override(config: Any, overrides: dict[str, Any]) -> None:
    """Set ``overrides`` on an HF config (data2vec-audio has no ``apply_spec_augment`` but reads it)."""
    for key, value in overrides.items():
        setattr(config, key, value)


def _pretrained_normalizes(name: str) -> bool:
    """``do_normalize`` of the pretrained folder's feature extractor (True when it has none)."""
    from transformers import AutoFeatureExtractor

    try:
        return bool(getattr(AutoFeatureExtractor.from_pretrained(name), "do_normalize", True))
    except (OSError, ValueError, KeyError):
        return True


def _check_encoder(encoder: nn.Module, source: str) -> None:
    config = encoder.config
    has_parts = hasattr(encoder, "feature_extractor") and hasattr(getattr(encoder, "encoder", None), "layers")
    if not has_parts or not hasattr(config, "conv_kernel"):
        raise HFStudentError(
            f"{source}: {type(encoder).__name__} is not a speech encoder with a convolutional feature encoder "
            "and transformer layers (wav2vec2, HuBERT, WavLM, data2vec-audio are)"
        )
    if getattr(config, "add_adapter", False):
        raise HFStudentError(f"{source}: encoders with an adapter (add_adapter=true) are not supported")


@register_student
class HFStudent(PooledHeads, nn.Module):
    """Normalised waveforms in, intent logits and distillation views out (see the module docstring)."""

    family: ClassVar[str] = "hf"
    config_class: ClassVar[type] = HFStudentConfig

    def __init__(self, config: HFStudentConfig) -> None:
        super().__init__()
        if config.num_intents == 0:
            raise ValueError("num_intents is 0 (from labels.json): resolve it before building the model")
        overrides = {"layerdrop": 0.0, "apply_spec_augment": config.spec_augment}
        if config.hf_config:
            self.encoder = _build_from_config(config.hf_config, overrides)
            source = "hf_config"
        else:
            self.encoder = _load_pretrained(config.pretrained, overrides)
            source = config.pretrained
            logger.info("hf student: %s (%s)", config.pretrained, type(self.encoder).__name__)
        _check_encoder(self.encoder, source)
        do_normalize = config.do_normalize
        if do_normalize is None:
            do_normalize = _pretrained_normalizes(config.pretrained) if not config.hf_config else True
        # the resolved config: what a model dir saves and rebuilds from without the hub
        self.config = dataclasses.replace(
            config, hf_config=self.encoder.config.to_dict(), do_normalize=do_normalize
        )
        hf = self.encoder.config
        self.hidden_size = int(hf.hidden_size)
        self.kernels = [int(k) for k in hf.conv_kernel]
        self.strides = [int(s) for s in hf.conv_stride]
        self.use_attention_mask = getattr(hf, "feat_extract_norm", "layer") == "layer"
        masking = self.config.spec_augment and getattr(hf, "mask_time_prob", 0.0) > 0
        self.min_input_length = min_samples_for_frames(
            max(1, int(getattr(hf, "mask_time_length", 1))) if masking else 1, self.kernels, self.strides
        )

        self.extra_layers = nn.ModuleList(
            EncoderLayer(self._extra_layer_config(config)) for _ in range(config.extra_layers)
        )
        self.final_norm = nn.LayerNorm(self.hidden_size) if config.extra_layers else None
        self.build_heads(
            self.hidden_size, config.pooling, config.num_intents, config.teacher_dim, config.ctc_vocab_size,
            config.slot_classes,
        )  # fmt: skip

        self.trainable_pretrained_layers = apply_freeze(self.pretrained_parts(), config.freeze)
        self.train()

    @classmethod
    def from_pretrained(cls, config: HFStudentConfig | dict[str, Any]) -> HFStudent:
        """A new student whose encoder holds the weights ``config.pretrained`` names (any
        ``hf_config`` in ``config`` is replaced by the pretrained one); the rest is random."""
        if isinstance(config, dict):
            config = HFStudentConfig(**config)
        return cls(dataclasses.replace(config, hf_config={}))

    def _extra_layer_config(self, config: HFStudentConfig) -> StudentConfig:
        return StudentConfig(
            d_model=self.hidden_size,
            num_heads=config.extra_heads,
            feedforward=config.extra_feedforward or 4 * self.hidden_size,
            dropout=config.dropout,
            num_layers=config.extra_layers,
        )

    def pretrained_parts(self) -> PretrainedParts:
        """Stem: the CNN feature encoder. Embedding: the rest below the layers (feature projection,
        positional convolution, the pre-encoder norm of post-LN encoders, the mask embedding).
        Top: the final norm of pre-LN (``do_stable_layer_norm``) encoders."""
        transformer = self.encoder.encoder
        stable = bool(getattr(self.encoder.config, "do_stable_layer_norm", False))
        embedding: list[nn.Module | nn.Parameter] = list(self.encoder.parameters(recurse=False))
        embedding += [
            module
            for name, module in self.encoder.named_children()
            if name not in ("encoder", "feature_extractor")
        ]
        top: list[nn.Module | nn.Parameter] = []
        for name, module in transformer.named_children():
            if name != "layers":
                (top if stable and name == "layer_norm" else embedding).append(module)
        embedding += list(transformer.parameters(recurse=False))
        return PretrainedParts(
            layers=list(transformer.layers),
            stem=[self.encoder.feature_extractor],
            embedding=embedding,
            top=top,
        )

    # -- the family interface -----------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Layers whose hidden states and attentions ``return_layers`` gives: trainable ones only."""
        return self.trainable_pretrained_layers + len(self.extra_layers)

    @property
    def has_ctc(self) -> bool:
        return self.ctc_head is not None

    def default_frontend(self) -> dict[str, Any]:
        return WaveformFrontEnd(normalize=bool(self.config.do_normalize)).to_config()

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames for inputs of ``lengths`` samples (shorter inputs are padded first)."""
        return conv_output_lengths(lengths.clamp_min(self.min_input_length), self.kernels, self.strides)

    def parameter_groups(
        self, lr: float, pretrained_lr: float, layer_decay: float = 1.0, weight_decay: float | None = None
    ) -> list[dict]:
        """AdamW groups (:func:`pipeline.students.finetune.parameter_groups`); frozen parameters left out.
        Matrices take the optimiser's weight decay unless ``weight_decay`` is given; biases and
        norms none."""
        return finetune_parameter_groups(
            [self],
            self.pretrained_parts(),
            lr,
            pretrained_lr,
            layer_decay=layer_decay,
            weight_decay=weight_decay,
        )

    def train(self, mode: bool = True) -> HFStudent:
        """Train mode, except for the fully frozen parts of the encoder (see the module docstring)."""
        super().train(mode)
        if mode:
            if self.trainable_pretrained_layers == 0:
                self.encoder.eval()  # no masking or dropout in a frozen encoder
            hold_frozen_in_eval(self.pretrained_parts())
        return self

    # -- forward ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _eager_attention(self, needed: bool) -> Iterator[None]:
        """Switch the encoder to eager attention (the only kind that returns probabilities).

        transformers picks SDPA where the architecture has it (WavLM has not); the config's
        ``_attn_implementation`` is how transformers itself reports the choice.
        """
        previous = self.encoder.config._attn_implementation
        if not needed or previous == "eager":
            yield
            return
        self.encoder.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.encoder.set_attn_implementation(previous)

    def _encode(self, features: Tensor, lengths: Tensor, return_layers: bool) -> tuple[Tensor, Tensor, Any]:
        """The HF encoder: its last hidden state, the encoder frames, and its full output."""
        waveforms = features.squeeze(-1) if features.dim() == 3 else features
        if waveforms.shape[1] < self.min_input_length:
            waveforms = functional.pad(waveforms, (0, self.min_input_length - waveforms.shape[1]))
        lengths = lengths.clamp_min(self.min_input_length)
        attention_mask = None
        if self.use_attention_mask:
            samples = torch.arange(waveforms.shape[1], device=waveforms.device)
            attention_mask = (samples[None, :] < lengths[:, None]).long()
        want_layers = return_layers and self.trainable_pretrained_layers > 0
        with self._eager_attention(want_layers):
            encoded = self.encoder(
                waveforms,
                attention_mask=attention_mask,
                output_hidden_states=want_layers,
                output_attentions=want_layers,
            )
        return encoded.last_hidden_state, self.output_lengths(lengths), encoded

    def forward(self, features: Tensor, lengths: Tensor, return_layers: bool = False) -> StudentOutput:
        """
        Args:
            features: normalised waveforms ``[batch, samples, 1]`` or ``[batch, samples]``, zero-padded.
            lengths: ``[batch]`` valid samples.
            return_layers: also return the trainable layers' hidden states and attention maps.
        """
        x, frames, encoded = self._encode(features, lengths, return_layers)
        hidden_states: list[Tensor] = []
        attentions: list[Tensor] = []
        trained = self.trainable_pretrained_layers
        if return_layers and trained > 0:
            hidden_states = list(encoded.hidden_states[-trained:])
            attentions = [attention.mean(dim=1) for attention in encoded.attentions[-trained:]]
        return self._top(x, frames, return_layers, hidden_states, attentions)

    @property
    def has_frozen_part(self) -> bool:
        """Whether :meth:`encode_frozen` can run the encoder apart (only under ``freeze: encoder``:
        the HF encoder runs as one piece)."""
        return (
            self.trainable_pretrained_layers == 0 and not FreezeSpec.parse(self.config.freeze).stem_trains()
        )

    def encode_frozen(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Run the frozen encoder without gradients: ``[batch, frames, hidden_size]`` (zero past the
        lengths) and ``[batch]`` encoder frames, what :meth:`forward_from_frozen` takes.

        Raises:
            ValueError: when pretrained layers train (``freeze`` other than ``encoder``).
        """
        if not self.has_frozen_part:
            raise ValueError(
                f"freeze is {self.config.freeze!r}: only 'encoder' leaves a frozen encoder to store"
            )
        with torch.no_grad():
            x, frames, _ = self._encode(features, lengths, return_layers=False)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]
        return x * valid.unsqueeze(-1).to(x.dtype), frames

    def forward_from_frozen(
        self, states: Tensor, lengths: Tensor, return_layers: bool = False
    ) -> StudentOutput:
        """The trainable rest, from :meth:`encode_frozen`'s output (``lengths`` in encoder frames)."""
        return self._top(states, lengths, return_layers, [], [])

    def _top(
        self,
        x: Tensor,
        lengths: Tensor,
        return_layers: bool,
        hidden_states: list[Tensor],
        attentions: list[Tensor],
    ) -> StudentOutput:
        """Extra layers, pooling and heads on the encoder output ``x`` (``lengths`` in frames)."""
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        for layer in self.extra_layers:
            x, attention = layer(x, padding, need_attention=return_layers)
            if return_layers:
                hidden_states.append(x)
                attentions.append(attention)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.heads_output(x, lengths, hidden_states, attentions)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())


def frames_per_second(config: HFStudentConfig | dict[str, Any]) -> float:
    """Encoder frame rate of an ``hf`` config's encoder (50 Hz for wav2vec2-style strides)."""
    hf = config.hf_config if isinstance(config, HFStudentConfig) else config
    return SAMPLE_RATE / math.prod(int(s) for s in hf["conv_stride"])
