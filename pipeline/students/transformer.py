"""The student: a small speech transformer from log-mel features to an intent.

fbank + global CMVN -> convolutional subsampling (x4 or x8) -> pre-LN transformer encoder ->
pooled utterance vector (mean, attention pooling or a learned CLS token) -> intent head.
A projection maps the student's width to the teacher's for the representation losses (Jiang et
al.'s W^H), and an optional character CTC head reads the encoder output.

The encoder returns every layer's hidden states and head-averaged attention probabilities when
asked (distillation needs them); otherwise it runs fused scaled-dot-product attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from pipeline.frontends.base import fbank_frontend_config
from pipeline.frontends.fbank import FbankConfig
from pipeline.students.registry import register_student

POOLINGS = ("mean", "attention", "cls")


@dataclass
class StudentConfig:
    """Architecture of the student; saved in every student model dir."""

    num_mel_bins: int = 80
    subsampling: int = 4  # 4 or 8 (two or three stride-2 convolutions)
    conv_channels: int = 64
    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 4
    feedforward: int = 1024
    dropout: float = 0.1
    pooling: str = "mean"  # mean | attention | cls
    num_intents: int = 31  # 0 in a training config: as many as the corpus's labels.json has
    teacher_dim: int = 0  # width of the teacher's vectors; 0: no projection head
    ctc_vocab_size: int = 0  # characters + blank; 0: no CTC head
    slot_classes: dict[str, int] = field(default_factory=dict)  # slot -> classes of its head (training fills)

    def __post_init__(self) -> None:
        check_slot_classes(self.slot_classes)
        if self.subsampling not in (4, 8):
            raise ValueError(f"subsampling must be 4 or 8, got {self.subsampling}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.num_intents < 0:
            raise ValueError("num_intents must be at least 1 (or 0: from the corpus's labels.json)")


def check_slot_classes(slot_classes: dict[str, int]) -> None:
    """Raise ValueError unless every slot head has a name and at least two classes (a value and none)."""
    for name, count in slot_classes.items():
        if not isinstance(name, str) or not name or not isinstance(count, int) or count < 2:
            raise ValueError(f"slot_classes: slot {name!r} needs at least 2 classes, got {count!r}")


class StudentOutput(NamedTuple):
    logits: Tensor  # [batch, intents]
    utterance: Tensor  # [batch, d_model] pooled vector
    projected: Tensor | None  # [batch, teacher_dim] utterance vector in the teacher's space
    lengths: Tensor  # [batch] encoder frames per utterance
    hidden_states: list[Tensor]  # per layer [batch, frames, d_model] (empty unless asked)
    attentions: list[Tensor]  # per layer [batch, frames, frames], heads averaged (empty unless asked)
    ctc_log_probs: Tensor | None  # [batch, frames, vocab]
    slot_logits: dict[
        str, Tensor
    ] = {}  # slot -> [batch, its classes] (LabelSet.slot_classes); empty: no slots


def subsampled_lengths(lengths: Tensor, subsampling: int) -> Tensor:
    """Frames left after the stride-2, kernel-3 convolutions (no padding)."""
    for _ in range(int(math.log2(subsampling))):
        lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
    return lengths.clamp_min(0)


def min_input_frames(subsampling: int) -> int:
    """The shortest input that still yields one encoder frame."""
    frames = 1
    for _ in range(int(math.log2(subsampling))):
        frames = 2 * frames + 1
    return frames


class ConvSubsampling(nn.Module):
    """Stride-2 3x3 convolutions over (time, frequency), then a linear map to ``d_model``."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        layers, channels_in, bins = [], 1, config.num_mel_bins
        for _ in range(int(math.log2(config.subsampling))):
            layers += [nn.Conv2d(channels_in, config.conv_channels, 3, stride=2), nn.ReLU()]
            channels_in, bins = config.conv_channels, (bins - 3) // 2 + 1
        self.convolutions = nn.Sequential(*layers)
        self.output = nn.Linear(config.conv_channels * bins, config.d_model)
        self.subsampling = config.subsampling

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.convolutions(features.unsqueeze(1))  # [batch, channels, frames, bins]
        batch, channels, frames, bins = x.shape
        x = self.output(x.transpose(1, 2).reshape(batch, frames, channels * bins))
        return x, subsampled_lengths(lengths, self.subsampling)


def pooling_scorer(width: int) -> nn.Module:
    """The scorer of attention pooling: one score per frame."""
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))


def masked_pool(x: Tensor, padding: Tensor, scorer: nn.Module | None = None) -> Tensor:
    """One vector per utterance from ``x [batch, frames, width]``, ignoring ``padding`` (True = pad).

    Mean over the valid frames, or, with a ``scorer`` (:func:`pooling_scorer`), their softmax-
    weighted sum (attention pooling). Shared by every student family.
    """
    if scorer is not None:
        scores = scorer(x).squeeze(-1).masked_fill(padding, float("-inf"))
        return (scores.softmax(dim=-1).unsqueeze(-1) * x).sum(dim=1)
    valid = (~padding).unsqueeze(-1).to(x.dtype)
    return (x * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)


class PooledHeads:
    """Mixin for every student family (an ``nn.Module`` subclass calls
    :meth:`build_heads` in ``__init__``): pooling, the intent head, the projection to the
    teacher's width, the CTC head and one head per slot on the pooled vector, under the parameter
    names every family uses (``pooling_scorer``, ``classifier``, ``projection``, ``ctc_head``,
    ``slot_heads.<i>`` in the label map's slot order, and with attention pooling
    ``slot_scorers.<i>``). With attention pooling each slot pools the frames with its own scorer,
    so that "medium" in "a medium latte" and in "medium roast" can be read by the head whose word
    it is, not through one vector that must hold every slot at once. Without slots there are no
    slot weights, so such a model has the layout and the numbers it had before slot heads existed."""

    def build_heads(self, width: int, pooling: str, num_intents: int, teacher_dim: int,
                    ctc_vocab_size: int, slot_classes: dict[str, int] | None = None) -> None:  # fmt: skip
        """Create the heads on top of ``width``-wide frames (``pooling``: ``attention`` or ``mean``);
        ``slot_classes``: slot name -> classes of its head (built last, so that the other heads
        draw the same initial weights as a model without slots)."""
        self.pooling_scorer = pooling_scorer(width) if pooling == "attention" else None
        self.classifier = nn.Linear(width, num_intents)
        self.projection = nn.Linear(width, teacher_dim) if teacher_dim else None
        self.ctc_head = nn.Linear(width, ctc_vocab_size) if ctc_vocab_size else None
        self.slot_names = list(slot_classes or {})
        self.slot_heads = nn.ModuleList(nn.Linear(width, count) for count in (slot_classes or {}).values())
        self.slot_scorers = (
            nn.ModuleList(pooling_scorer(width) for _ in self.slot_names)
            if pooling == "attention" and self.slot_names
            else None
        )

    def heads_output(self, x: Tensor, lengths: Tensor, hidden_states: list[Tensor],
                     attentions: list[Tensor], utterance: Tensor | None = None) -> StudentOutput:  # fmt: skip
        """The :class:`StudentOutput` of the top frames ``x [batch, frames, width]`` (``lengths`` valid);
        ``utterance`` is pooled from ``x`` unless given (a CLS token's state)."""
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        if utterance is None:
            utterance = masked_pool(x, padding, self.pooling_scorer)
        if self.slot_scorers is not None:
            slot_vectors = [masked_pool(x, padding, scorer) for scorer in self.slot_scorers]
        else:
            slot_vectors = [utterance] * len(self.slot_names)
        return StudentOutput(
            logits=self.classifier(utterance),
            utterance=utterance,
            projected=self.projection(utterance) if self.projection is not None else None,
            lengths=lengths,
            hidden_states=hidden_states,
            attentions=attentions,
            ctc_log_probs=self.ctc_head(x).float().log_softmax(dim=-1) if self.ctc_head is not None else None,
            slot_logits={
                name: head(vector)
                for name, head, vector in zip(self.slot_names, self.slot_heads, slot_vectors, strict=True)
            },
        )


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies)
    return table


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor, dropout: float,
                     need_attention: bool) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Multi-head attention over ``q, k, v [batch, heads, frames, head_dim]``, ignoring padded keys
    (``key_padding [batch, frames]``, True = pad); ``dropout`` on the probabilities (0 in eval).

    Returns the context ``[batch, heads, frames, head_dim]`` and, with ``need_attention``, the
    head-averaged probabilities ``[batch, frames, frames]`` (otherwise fused SDPA and None).
    Shared by every student family's transformer layers.
    """
    mask = ~key_padding[:, None, None, :]  # True where a key may be attended
    if not need_attention:
        return functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    probabilities = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    context = functional.dropout(probabilities, dropout, dropout > 0) @ v
    return context, probabilities.mean(dim=1)


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer that can return its head-averaged attention probabilities."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.attention_norm = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.attention_output = nn.Linear(config.d_model, config.d_model)
        self.feedforward_norm = nn.LayerNorm(config.d_model)
        self.feedforward = nn.Sequential(
            nn.Linear(config.d_model, config.feedforward),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.feedforward, config.d_model),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.attention_dropout = config.dropout

    def forward(self, x: Tensor, key_padding: Tensor, need_attention: bool) -> tuple[Tensor, Tensor | None]:
        batch, frames, width = x.shape
        q, k, v = (
            self.qkv(self.attention_norm(x))
            .view(batch, frames, 3, self.num_heads, width // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )  # each [batch, heads, frames, head_dim]
        dropout = self.attention_dropout if self.training else 0.0
        context, averaged = masked_attention(q, k, v, key_padding, dropout, need_attention)
        context = context.transpose(1, 2).reshape(batch, frames, width)
        x = x + self.dropout(self.attention_output(context))
        x = x + self.dropout(self.feedforward(self.feedforward_norm(x)))
        return x, averaged


@register_student
class SpeechStudent(PooledHeads, nn.Module):
    """Log-mel features (already CMVN-normalised) in, intent logits and distillation views out.

    The ``transformer`` student family (:mod:`pipeline.students.registry`): trained from scratch, so
    :meth:`parameter_groups` has one group at the base learning rate.
    """

    family: ClassVar[str] = "transformer"
    config_class: ClassVar[type] = StudentConfig

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        if config.num_intents == 0:
            raise ValueError("num_intents is 0 (from labels.json): resolve it before building the model")
        self.config = config
        self.subsampling = ConvSubsampling(config)
        self.input_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model)
        if config.pooling == "cls":
            self.cls_token = nn.Parameter(torch.randn(config.d_model) * 0.02)
        heads_pooling = "mean" if config.pooling == "cls" else config.pooling  # CLS: no scorer
        self.build_heads(config.d_model, heads_pooling, config.num_intents, config.teacher_dim,
                         config.ctc_vocab_size, config.slot_classes)  # fmt: skip

    def forward(self, features: Tensor, lengths: Tensor, return_layers: bool = False) -> StudentOutput:
        """
        Args:
            features: ``[batch, frames, num_mel_bins]``, CMVN-normalised, zero-padded.
            lengths: ``[batch]`` valid frames.
            return_layers: also return every layer's hidden states and attention maps.
        """
        minimum = min_input_frames(self.config.subsampling)
        if features.shape[1] < minimum:
            features = functional.pad(features, (0, 0, 0, minimum - features.shape[1]))
        lengths = lengths.clamp_min(minimum)  # a too-short utterance still gets one frame
        x, lengths = self.subsampling(features, lengths)
        batch, frames, width = x.shape
        x = x + sinusoidal_positions(frames, width, x.device)
        if self.config.pooling == "cls":
            x = torch.cat([self.cls_token.expand(batch, 1, width).to(x.dtype), x], dim=1)
            lengths = lengths + 1
            frames += 1
        x = self.input_dropout(x)
        padding = torch.arange(frames, device=x.device)[None, :] >= lengths[:, None]
        hidden_states, attentions = [], []
        for layer in self.layers:
            x, attention = layer(x, padding, need_attention=return_layers)
            if return_layers:
                hidden_states.append(x)
                attentions.append(attention)
        x = self.final_norm(x)
        utterance = x[:, 0] if self.config.pooling == "cls" else None
        if self.config.pooling == "cls":  # frames, lengths and maps without the CLS position
            x = x[:, 1:]
            lengths = lengths - 1
            hidden_states = [h[:, 1:] for h in hidden_states]
            attentions = [
                a[:, 1:, 1:] / a[:, 1:, 1:].sum(-1, keepdim=True).clamp_min(1e-9) for a in attentions
            ]
        return self.heads_output(x, lengths, hidden_states, attentions, utterance=utterance)

    @property
    def num_layers(self) -> int:
        """Encoder layers (the hidden states and attention maps ``return_layers`` gives)."""
        return self.config.num_layers

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    @property
    def has_ctc(self) -> bool:
        return self.ctc_head is not None

    @property
    def min_input_length(self) -> int:
        """Shorter inputs are padded to this many frames (one encoder frame)."""
        return min_input_frames(self.config.subsampling)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames for inputs of these lengths (as :meth:`forward` reports them)."""
        return subsampled_lengths(lengths.clamp_min(self.min_input_length), self.config.subsampling)

    def default_frontend(self) -> dict[str, Any]:
        """Kaldi fbank with this student's mel bins (CMVN statistics come from the train store)."""
        return fbank_frontend_config(FbankConfig(num_mel_bins=self.config.num_mel_bins))

    def parameter_groups(self, lr: float, pretrained_lr: float, layer_decay: float) -> list[dict]:
        """One group: every parameter at ``lr`` (nothing here is pretrained)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
