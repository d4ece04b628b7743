"""The ``whisper`` student family: a pretrained Whisper encoder under a small trainable top.

Whisper log-mel (:mod:`pipeline.frontends.whisper_logmel`) -> conv1 (k3) -> GELU -> conv2 (k3, stride 2,
50 Hz) -> GELU -> + Whisper's positional table sliced to the utterance (no padding to 30 s) ->
the pretrained pre-LN layers -> the encoder's final layer norm -> ``extra_layers`` new
transformer layers (+ their own final norm) -> pooling (attention or mean) -> intent head; a
projection to the teacher's width and an optional character CTC head read the same states.

The encoder is our own module under Hugging Face ``WhisperEncoder`` parameter names, so weights
from :func:`pipeline.students.pretrained.load_whisper_encoder` (HF, CTranslate2 or the packaged tiny.en)
load as they are. Unlike ``WhisperEncoder`` it takes any length up to 30 s, and masks padding
(past each utterance the features and the conv1 output are zero, and attention ignores padded
keys), so an utterance's output does not depend on what else is in its batch.

``freeze`` (see :mod:`pipeline.students.finetune`) splits the model into a frozen bottom (the conv stem
and the lowest pretrained layers, and the final layer norm when every layer is frozen) and a
trainable rest. :meth:`WhisperStudent.encode_frozen` runs the frozen bottom once, without
gradients, so training can store its outputs; :meth:`WhisperStudent.forward_from_frozen` runs
the rest: ``forward(f, n) == forward_from_frozen(*encode_frozen(f, n))``. ``return_layers``
returns the hidden states and head-averaged attention of the trainable layers only (trainable
pretrained layers, then the extra layers, bottom to top).

Measured with the packaged tiny.en (2026-12-01, 2 shared CPU cores, espeak ``small`` corpus):
the encoder matches ctranslate2's own Whisper encoder on a 30 s window to 3e-4 (outputs up to
12). Sliced to the utterance instead of padded to 30 s, the encoder states of the valid frames
keep a mean cosine of 0.93 (5th percentile 0.78) to the padded ones and the mean-pooled
utterance vectors 0.96; a logistic-regression probe on mean-pooled frozen states, trained and
tested within each condition (310 train, 64 + 64 test utterances), scores 68.8 / 67.2 %
(test / test_unseen_phrasing) sliced against 68.8 / 70.3 % padded, i.e. equal within the
noise of 64 utterances; trained on all 2,480 train utterances, the sliced probe reaches 92.1 /
87.4 % on the full splits. Encoding is 15x cheaper sliced (0.06 s against 0.97 s per utterance,
batched). One 3 s command on one thread: log-mel 0.6 ms, encoder + head 29 ms (+ one extra
layer 37 ms) in PyTorch fp32; as ONNX with the log-mel in the graph 17 ms fp32 (logits equal to
PyTorch's) and 8.6 ms with int8 MatMuls (the log-mel left in fp32).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from pipeline.core.config import from_dict
from pipeline.core.errors import SlukdError
from pipeline.frontends.whisper_logmel import HOP_LENGTH, SAMPLE_RATE, WhisperLogMel
from pipeline.students.finetune import (
    FreezeSpec,
    PretrainedParts,
    apply_freeze,
    hold_frozen_in_eval,
    parameter_groups,
)
from pipeline.students.pretrained import PretrainedError, WhisperEncoderWeights, load_whisper_encoder
from pipeline.students.registry import register_student
from pipeline.students.transformer import PooledHeads, StudentOutput, check_slot_classes, masked_attention

POOLINGS = ("attention", "mean")
# config fields read from the pretrained weights (0 until resolved by WhisperStudent.from_pretrained)
ENCODER_FIELDS = ("num_mel_bins", "d_model", "encoder_layers", "num_heads", "ffn_dim", "max_positions")


class WhisperInputError(SlukdError, ValueError):
    """An input the Whisper encoder cannot take (longer than its positional table)."""


@dataclass
class WhisperStudentConfig:
    """The ``whisper`` student; saved in every model dir with the encoder fields resolved.

    Built with the encoder fields unset (0), the student reads its encoder's shape and weights
    from ``pretrained``; built with them set (a model dir), it needs no pretrained source.
    """

    pretrained: str = (
        "packaged"  # packaged | CTranslate2 folder | HF name or folder (pipeline.students.pretrained)
    )
    freeze: str = "encoder"  # encoder | top:N | stem | none (pipeline.students.finetune)
    extra_layers: int = 1  # new transformer layers on top of the encoder
    dropout: float = 0.1  # in the extra layers
    encoder_dropout: float = 0.0  # in the pretrained layers (Whisper itself trains without)
    pooling: str = "attention"  # attention | mean
    num_intents: int = 31  # 0 in a training config: as many as the corpus's labels.json has
    teacher_dim: int = 0  # width of the teacher's vectors; 0: no projection head
    ctc_vocab_size: int = 0  # characters + blank; 0: no CTC head
    slot_classes: dict[str, int] = field(default_factory=dict)  # slot -> classes of its head (training fills)
    # the encoder's shape, filled in from the pretrained weights
    num_mel_bins: int = 0
    d_model: int = 0
    encoder_layers: int = 0
    num_heads: int = 0
    ffn_dim: int = 0
    max_positions: int = 0

    def __post_init__(self) -> None:
        FreezeSpec.parse(self.freeze)
        check_slot_classes(self.slot_classes)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.extra_layers < 0:
            raise ValueError(f"extra_layers must be >= 0, got {self.extra_layers}")
        if self.num_intents < 0:
            raise ValueError("num_intents must be at least 1 (or 0: from the corpus's labels.json)")
        if self.resolved and self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")

    @property
    def resolved(self) -> bool:
        """Whether the encoder's shape is known (from the weights or a saved model dir)."""
        return all(getattr(self, name) > 0 for name in ENCODER_FIELDS)

    def with_encoder(self, weights: WhisperEncoderWeights) -> WhisperStudentConfig:
        """This config with the encoder fields of ``weights`` (which must agree with any already set)."""
        shape = {
            "num_mel_bins": weights.num_mel_bins, "d_model": weights.d_model, "encoder_layers": weights.num_layers,
            "num_heads": weights.num_heads, "ffn_dim": weights.ffn_dim, "max_positions": weights.max_positions,
        }  # fmt: skip
        clashes = [f"{name} {getattr(self, name)} != {value}" for name, value in shape.items()
                   if getattr(self, name) not in (0, value)]  # fmt: skip
        if clashes:
            raise PretrainedError(
                f"{weights.source}: the encoder does not fit the config ({', '.join(clashes)})"
            )
        return dataclasses.replace(self, **shape)


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's positional table ``[length, channels]``: sines then cosines."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inverse[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def padding_mask(lengths: Tensor, frames: int) -> Tensor:
    """``[batch, frames]`` True on padding."""
    return torch.arange(frames, device=lengths.device)[None, :] >= lengths[:, None]


class PositionTable(nn.Module):
    """A fixed positional table (a buffer, saved with the weights as ``weight``)."""

    def __init__(self, length: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", whisper_sinusoids(length, channels))


class WhisperAttention(nn.Module):
    """Whisper's self-attention (no k bias); returns head-averaged probabilities when asked."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, key_padding: Tensor, need_attention: bool) -> tuple[Tensor, Tensor | None]:
        batch, frames, width = x.shape
        q, k, v = (
            projection(x).view(batch, frames, self.num_heads, width // self.num_heads).transpose(1, 2)
            for projection in (self.q_proj, self.k_proj, self.v_proj)
        )  # each [batch, heads, frames, head_dim]
        dropout = self.dropout if self.training else 0.0
        context, averaged = masked_attention(q, k, v, key_padding, dropout, need_attention)
        return self.out_proj(context.transpose(1, 2).reshape(batch, frames, width)), averaged


class WhisperLayer(nn.Module):
    """A pre-LN Whisper encoder layer (HF names: ``self_attn``, ``fc1``, ``fc2``, the two layer norms)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = WhisperAttention(d_model, num_heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor, need_attention: bool) -> tuple[Tensor, Tensor | None]:
        attended, attention = self.self_attn(self.self_attn_layer_norm(x), key_padding, need_attention)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.fc2(self.dropout(functional.gelu(self.fc1(self.final_layer_norm(x))))))
        return x, attention


class WhisperEncoder(nn.Module):
    """Whisper's encoder for any length up to ``max_positions`` output frames, padding masked."""

    def __init__(self, config: WhisperStudentConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.embed_positions = PositionTable(config.max_positions, d_model)
        self.layers = nn.ModuleList(
            WhisperLayer(d_model, config.num_heads, config.ffn_dim, config.encoder_dropout)
            for _ in range(config.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def stem(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch, frames, mels]`` -> ``[batch, frames/2, d_model]`` with positions, zero past the lengths."""
        lengths = lengths.clamp_min(1)
        if features.shape[1] < 1:
            features = functional.pad(features, (0, 0, 0, 1))
        limit = self.embed_positions.weight.shape[0]
        if (features.shape[1] + 1) // 2 > limit:
            raise WhisperInputError(
                f"an input of {features.shape[1]} frames is longer than the Whisper encoder's {2 * limit} (30 s)"
            )
        valid = (~padding_mask(lengths, features.shape[1])).unsqueeze(1).to(features.dtype)
        x = functional.gelu(self.conv1(features.transpose(1, 2) * valid)) * valid  # [batch, d_model, frames]
        x = functional.gelu(self.conv2(x)).transpose(1, 2)  # [batch, frames / 2, d_model]
        output_lengths = encoder_frames(lengths)
        x = x + self.embed_positions.weight[: x.shape[1]].to(x.dtype)
        return x * (~padding_mask(output_lengths, x.shape[1])).unsqueeze(-1).to(x.dtype), output_lengths


def encoder_frames(lengths: Tensor) -> Tensor:
    """Encoder (50 Hz) frames for ``lengths`` log-mel (100 Hz) frames: conv2 halves, rounding up."""
    return torch.div(lengths.clamp_min(1) - 1, 2, rounding_mode="floor") + 1


@register_student
class WhisperStudent(PooledHeads, nn.Module):
    """Whisper log-mel in, intent logits and distillation views out (see the module docstring)."""

    family: ClassVar[str] = "whisper"
    config_class: ClassVar[type] = WhisperStudentConfig

    def __init__(self, config: WhisperStudentConfig) -> None:
        super().__init__()
        if config.num_intents == 0:
            raise ValueError("num_intents is 0 (from labels.json): resolve it before building the model")
        weights = None
        if not config.resolved:  # a new student: the encoder's shape and weights from config.pretrained
            weights = load_whisper_encoder(config.pretrained)
            config = config.with_encoder(weights)
        self.config = config
        self.encoder = WhisperEncoder(config)
        self.extra_layers = nn.ModuleList(
            WhisperLayer(config.d_model, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.extra_layers)
        )
        self.extra_norm = nn.LayerNorm(config.d_model) if config.extra_layers else None
        self.build_heads(
            config.d_model, config.pooling, config.num_intents, config.teacher_dim, config.ctc_vocab_size,
            config.slot_classes,
        )  # fmt: skip
        self.freeze = FreezeSpec.parse(config.freeze)
        self.trainable_pretrained_layers = apply_freeze(self.pretrained_parts(), self.freeze)
        self.frozen_layers = config.encoder_layers - self.trainable_pretrained_layers
        if weights is not None:
            self._load_encoder(weights)
        self.train()

    @classmethod
    def from_pretrained(cls, config: WhisperStudentConfig | dict[str, Any]) -> WhisperStudent:
        """A new student whose encoder holds the weights ``config.pretrained`` names (any encoder
        shape in ``config`` is replaced by the pretrained one); the rest is random."""
        if isinstance(config, dict):
            config = from_dict(WhisperStudentConfig, config)
        return cls(dataclasses.replace(config, **dict.fromkeys(ENCODER_FIELDS, 0)))

    def _load_encoder(self, weights: WhisperEncoderWeights) -> None:
        missing, unexpected = self.encoder.load_state_dict(weights.state_dict, strict=False)
        if missing or unexpected:
            raise PretrainedError(
                f"{weights.source}: the Whisper encoder weights do not fit (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )

    # the family interface -------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Layers whose states ``return_layers`` gives: the trainable pretrained ones and the extra ones."""
        return self.trainable_pretrained_layers + self.config.extra_layers

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    @property
    def has_ctc(self) -> bool:
        return self.ctc_head is not None

    @property
    def has_frozen_part(self) -> bool:
        """Whether anything is frozen (every freeze mode but ``none`` freezes at least the stem)."""
        return self.freeze.mode != "none"

    @property
    def max_input_seconds(self) -> float:
        """The longest input the encoder takes (its positional table: 30 s for Whisper)."""
        return 2 * self.config.max_positions * HOP_LENGTH / SAMPLE_RATE

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return encoder_frames(lengths)

    def default_frontend(self) -> dict[str, Any]:
        return WhisperLogMel(self.config.num_mel_bins).to_config()

    def pretrained_parts(self) -> PretrainedParts:
        """The pretrained part, bottom to top (the positional table is a fixed buffer)."""
        encoder = self.encoder
        return PretrainedParts(
            layers=list(encoder.layers), stem=(encoder.conv1, encoder.conv2), top=(encoder.layer_norm,)
        )

    def parameter_groups(
        self, lr: float, pretrained_lr: float, layer_decay: float = 1.0, weight_decay: float | None = None
    ) -> list[dict]:
        """AdamW groups (:func:`pipeline.students.finetune.parameter_groups`); frozen parameters left out.
        Matrices take the optimiser's weight decay unless ``weight_decay`` is given; biases and
        norms none."""
        return parameter_groups([self], self.pretrained_parts(), lr, pretrained_lr, layer_decay, weight_decay)

    def train(self, mode: bool = True) -> WhisperStudent:
        super().train(mode)
        hold_frozen_in_eval(self.pretrained_parts())  # a frozen bottom gives the same output in training
        return self

    # running it ------------------------------------------------------------------------------

    def _bottom(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, frames = self.encoder.stem(features, lengths)
        padding = padding_mask(frames, x.shape[1])
        for layer in self.encoder.layers[: self.frozen_layers]:
            x, _ = layer(x, padding, need_attention=False)
        if self.trainable_pretrained_layers == 0:
            x = self.encoder.layer_norm(x)
        return x * (~padding).unsqueeze(-1).to(x.dtype), frames

    def encode_frozen(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Run the frozen bottom without gradients: ``[batch, frames/2, d_model]`` (zero past the
        lengths) and ``[batch]`` encoder frames, what :meth:`forward_from_frozen` takes.

        Raises:
            ValueError: under ``freeze: none`` (nothing is frozen).
        """
        if not self.has_frozen_part:
            raise ValueError("freeze is 'none': the student has no frozen part to encode")
        with torch.no_grad():
            return self._bottom(features, lengths)

    def forward(self, features: Tensor, lengths: Tensor, return_layers: bool = False) -> StudentOutput:
        """
        Args:
            features: ``[batch, frames, num_mel_bins]`` Whisper log-mel, zero-padded (at most 30 s).
            lengths: ``[batch]`` valid frames.
            return_layers: also return the trainable layers' hidden states and attention maps.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.has_frozen_part):
            states, frames = self._bottom(features, lengths)
        return self.forward_from_frozen(states, frames, return_layers)

    def forward_from_frozen(
        self, states: Tensor, lengths: Tensor, return_layers: bool = False
    ) -> StudentOutput:
        """The trainable rest, from :meth:`encode_frozen`'s output (``lengths`` in encoder frames)."""
        padding = padding_mask(lengths, states.shape[1])
        x, hidden_states, attentions = states, [], []
        top_layers = list(self.encoder.layers[self.frozen_layers :])
        for index, layer in enumerate([*top_layers, *self.extra_layers]):
            if index == len(top_layers) and top_layers:
                x = self.encoder.layer_norm(x)
            x, attention = layer(x, padding, need_attention=return_layers)
            if return_layers:
                hidden_states.append(x)
                attentions.append(attention)
        if top_layers and not self.config.extra_layers:
            x = self.encoder.layer_norm(x)
        if self.extra_norm is not None:
            x = self.extra_norm(x)
        return self.heads_output(x, lengths, hidden_states, attentions)
