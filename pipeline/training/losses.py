"""Distillation losses from a BERT teacher to the speech student, and the alignment of speech
frames to text tokens.

Every loss has a weight in :class:`DistillConfig`; a weight of 0 switches it off, so any
subset runs (the ablation table comes from these switches):

- ``ce``: cross-entropy with the gold intent (optional label smoothing);
- ``logits``: KL(teacher || student) of temperature-softened distributions, x T^2 (Hinton);
- ``sentence``: projected student utterance vector vs the teacher's sentence vector;
- ``hidden``: student layer i vs teacher layer i*k (uniform map), after a learned projection
  W^H to the teacher's width (Jiang et al.'s W^H, which their released code lacks);
- ``attention``: head-averaged attention probabilities, KL per query row, probabilities on
  both sides;
- ``ctc``: character CTC on the encoder output;
- ``slot_ce``: cross-entropy of every slot head with the gold slot class (``none`` where the
  utterance leaves the slot empty), summed over the slots, so each slot weighs like the intent
  (default ``None``: 1 where the labels have slots);
- ``slot_logits``: the ``logits`` loss for every slot head against the teacher's slot head
  (KL at the same temperature, x T^2), summed over the slots. Its default (``None``) is the
  ``logits`` weight when the teacher's targets carry slot logits, else 0
  (:func:`resolve_slot_losses`). Labels without slots switch both off, so such a model trains
  exactly as before slot heads existed.

Speech has more frames than the transcript has tokens; ``alignment`` names how they meet:

- ``pad`` (Jiang et al.): the token sequence is zero-padded (or cut) to the speech length;
- ``interpolate``: the token sequence is linearly resampled along time to the speech length;
- ``segment``: the speech frames are cut into as many equal segments as there are tokens and
  pooled per segment (hidden states averaged; attention mass summed over key segments and
  averaged over query segments, so every row stays a distribution).

Padding never contributes to any loss: every comparison is masked to valid frames/tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

ALIGNMENTS = ("pad", "interpolate", "segment")
SENTENCE_DISTANCES = ("mse", "cosine")
LOSS_NAMES = ("ce", "logits", "sentence", "hidden", "attention", "ctc", "slot_ce", "slot_logits")
EPSILON = 1e-8


@dataclass
class DistillConfig:
    """Loss weights and their settings."""

    ce: float = 1.0
    logits: float = 0.0
    sentence: float = 0.0
    hidden: float = 0.0
    attention: float = 0.0
    ctc: float = 0.0
    slot_ce: float | None = None  # CE of each slot head; None: 1 where the labels have slots, else 0
    slot_logits: float | None = (
        None  # KD of each slot head; None: the logits weight if the teacher has slot heads
    )
    temperature: float = 2.0
    label_smoothing: float = 0.0
    alignment: str = "segment"  # pad | interpolate | segment
    sentence_distance: str = "mse"  # mse | cosine

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}")
        if self.sentence_distance not in SENTENCE_DISTANCES:
            raise ValueError(f"sentence_distance must be one of {', '.join(SENTENCE_DISTANCES)}")
        if any((getattr(self, name) or 0.0) < 0 for name in LOSS_NAMES):
            raise ValueError("loss weights must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")

    def active(self) -> list[str]:
        return [name for name in LOSS_NAMES if (getattr(self, name) or 0.0) > 0]

    @property
    def needs_layers(self) -> bool:
        return self.hidden > 0 or self.attention > 0

    @property
    def needs_teacher(self) -> bool:
        return self.logits > 0 or self.sentence > 0 or self.needs_layers or (self.slot_logits or 0.0) > 0


def resolve_slot_losses(config: DistillConfig, has_slots: bool, teacher_slot_logits: bool) -> DistillConfig:
    """``config`` with the slot weights settled: both 0 without slots; ``slot_logits: None`` becomes
    the ``logits`` weight when the teacher's targets have slot logits, else 0."""
    import dataclasses

    if not has_slots:
        return dataclasses.replace(config, slot_ce=0.0, slot_logits=0.0)
    slot_ce = 1.0 if config.slot_ce is None else config.slot_ce
    slot_logits = config.slot_logits
    if slot_logits is None:
        slot_logits = config.logits if teacher_slot_logits and config.logits > 0 else 0.0
    return dataclasses.replace(config, slot_ce=slot_ce, slot_logits=slot_logits)


class TeacherBatch(NamedTuple):
    """The teacher's targets for one batch of utterances, padded over tokens."""

    logits: Tensor | None  # [batch, intents]
    sentence: Tensor | None  # [batch, teacher_dim]
    hidden_states: list[Tensor]  # per mapped layer [batch, tokens, teacher_dim]
    attentions: list[Tensor]  # per mapped layer [batch, tokens, tokens]
    token_lengths: Tensor | None  # [batch]
    slot_logits: dict[str, Tensor] = {}  # slot -> [batch, classes] (targets of a teacher with slot heads)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based, as in ``hidden_states[i]``) matched to student layers 1..L.

    Student layer i meets teacher layer i * k with k = teacher_layers / student_layers, rounded
    half up when k is not an integer, so the top layers meet and the rest spread evenly:
    (3, 12) -> [4, 8, 12], (4, 6) -> [2, 3, 5, 6], (4, 2) -> [1, 1, 2, 2].
    """
    return [
        max(1, math.floor((i + 1) * teacher_layers / student_layers + 0.5)) for i in range(student_layers)
    ]


# ---------------------------------------------------------------------------------------------
# Alignment


def segment_matrix(frame_lengths: Tensor, token_lengths: Tensor, frames: int, tokens: int) -> Tensor:
    """``[batch, tokens, frames]`` one-hot assignment of each valid frame to its token segment."""
    device = frame_lengths.device
    position = torch.arange(frames, device=device)[None, :]
    segment = torch.div(
        position * token_lengths[:, None], frame_lengths.clamp_min(1)[:, None], rounding_mode="floor"
    )
    valid = position < frame_lengths[:, None]
    assignment = (segment[:, None, :] == torch.arange(tokens, device=device)[None, :, None]) & valid[
        :, None, :
    ]
    return assignment.float()


def interpolation_matrix(frame_lengths: Tensor, token_lengths: Tensor, frames: int, tokens: int) -> Tensor:
    """``[batch, frames, tokens]`` linear-interpolation weights that resample tokens to frames."""
    device = frame_lengths.device
    position = torch.arange(frames, device=device, dtype=torch.float32)[None, :]
    scale = (token_lengths - 1).clamp_min(0).float() / (frame_lengths - 1).clamp_min(1).float()
    source = position * scale[:, None]  # fractional token position of every frame
    low = source.floor().long().clamp(max=tokens - 1)
    high = (low + 1).clamp(max=(token_lengths - 1).clamp_min(0)[:, None])
    fraction = (source - low.float()).clamp(0, 1)
    weights = torch.zeros(frame_lengths.shape[0], frames, tokens, device=device)
    weights.scatter_add_(2, low.unsqueeze(-1), (1 - fraction).unsqueeze(-1))
    weights.scatter_add_(2, high.unsqueeze(-1), fraction.unsqueeze(-1))
    valid = (position < frame_lengths[:, None]).unsqueeze(-1)
    return weights * valid


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def hidden_loss(
    student: Tensor, teacher: Tensor, frame_lengths: Tensor, token_lengths: Tensor, alignment: str
) -> Tensor:
    """MSE between (projected) student states ``[B, F, H]`` and teacher states ``[B, T, H]``."""
    batch, frames, _ = student.shape
    tokens = teacher.shape[1]
    teacher = teacher.to(student.dtype)
    if alignment == "segment":
        assignment = segment_matrix(frame_lengths, token_lengths, frames, tokens)
        counts = assignment.sum(-1, keepdim=True)
        pooled = (assignment @ student) / counts.clamp_min(1.0)
        mask = (counts.squeeze(-1) > 0) & (
            torch.arange(tokens, device=student.device)[None] < token_lengths[:, None]
        )
        return _masked_mean((pooled - teacher).pow(2).mean(-1), mask)
    if alignment == "interpolate":
        target = interpolation_matrix(frame_lengths, token_lengths, frames, tokens) @ teacher
    else:  # pad: teacher tokens on the first frames, zeros after, cut at the speech length
        target = torch.zeros_like(student)
        keep = min(frames, tokens)
        token_valid = torch.arange(keep, device=student.device)[None, :, None] < token_lengths[:, None, None]
        target[:, :keep] = teacher[:, :keep] * token_valid
    mask = torch.arange(frames, device=student.device)[None] < frame_lengths[:, None]
    return _masked_mean((student - target).pow(2).mean(-1), mask)


def _row_kl(teacher: Tensor, student: Tensor) -> Tensor:
    """KL(teacher row || student row), summed over the last axis."""
    return (teacher * (teacher.clamp_min(EPSILON).log() - student.clamp_min(EPSILON).log())).sum(-1)


def attention_loss(
    student: Tensor, teacher: Tensor, frame_lengths: Tensor, token_lengths: Tensor, alignment: str
) -> Tensor:
    """KL per query row between attention distributions, student ``[B, F, F]``, teacher ``[B, T, T]``."""
    batch, frames, _ = student.shape
    tokens = teacher.shape[1]
    device = student.device
    student = student.float()
    token_valid = torch.arange(tokens, device=device)[None] < token_lengths[:, None]
    # Keys past the transcript are padding: no mass there, rows renormalised.
    teacher = teacher.float() * token_valid[:, None, :]
    teacher = teacher / teacher.sum(-1, keepdim=True).clamp_min(EPSILON)
    if alignment == "segment":
        assignment = segment_matrix(frame_lengths, token_lengths, frames, tokens)
        counts = assignment.sum(-1, keepdim=True)
        pooled = (assignment @ student @ assignment.transpose(1, 2)) / counts.clamp_min(1.0)
        mask = (counts.squeeze(-1) > 0) & token_valid
        return _masked_mean(_row_kl(teacher, pooled), mask)
    frame_valid = torch.arange(frames, device=device)[None] < frame_lengths[:, None]
    if alignment == "interpolate":
        weights = interpolation_matrix(frame_lengths, token_lengths, frames, tokens)
        target = weights @ teacher @ weights.transpose(1, 2)
        target = target / target.sum(-1, keepdim=True).clamp_min(EPSILON)
        return _masked_mean(_row_kl(target, student), frame_valid)
    # pad: the teacher map sits in the top-left corner, cut to each utterance's own speech
    # length; rows past the transcript have no target.
    keep = min(frames, tokens)
    target = torch.zeros_like(student)
    target[:, :keep, :keep] = teacher[:, :keep, :keep]
    target = target * frame_valid[:, None, :]
    target = target / target.sum(-1, keepdim=True).clamp_min(EPSILON)
    rows = frame_valid & (torch.arange(frames, device=device)[None] < token_lengths[:, None])
    return _masked_mean(_row_kl(target, student), rows)


# ---------------------------------------------------------------------------------------------
# The combined loss


class LossBreakdown(NamedTuple):
    total: Tensor
    terms: dict[str, Tensor]  # unweighted value of every active loss


class DistillationLoss(nn.Module):
    """Weighted sum of the active losses; owns the hidden-state projection W^H."""

    def __init__(
        self,
        config: DistillConfig,
        student_dim: int,
        teacher_dim: int = 0,
        layer_map: list[int] | None = None,
    ):
        super().__init__()
        self.config = config
        self.layer_map = layer_map or []
        self.hidden_projection = (
            nn.Linear(student_dim, teacher_dim) if config.hidden > 0 and teacher_dim else None
        )
        if config.hidden > 0 and self.hidden_projection is None:
            raise ValueError("the hidden loss needs the teacher's width (teacher_dim)")

    def forward(self, student, targets: Tensor, teacher: TeacherBatch | None = None,
                ctc_targets: Tensor | None = None, ctc_target_lengths: Tensor | None = None,
                slot_targets: Tensor | None = None) -> LossBreakdown:  # fmt: skip
        """
        Args:
            student: a :class:`pipeline.students.transformer.StudentOutput` (with layers when hidden/attention are on).
            targets: ``[batch]`` gold intent ids.
            teacher: the teacher's targets (needed by logits, sentence, hidden, attention).
            ctc_targets: ``[batch, max_chars]`` character ids (padded) for the CTC loss.
            ctc_target_lengths: ``[batch]``.
            slot_targets: ``[batch, slots]`` gold slot class ids, in the student's slot-head order.
        """
        config = self.config
        terms: dict[str, Tensor] = {}
        if config.ce > 0:
            terms["ce"] = functional.cross_entropy(
                student.logits.float(), targets, label_smoothing=config.label_smoothing
            )
        if config.needs_teacher and teacher is None:
            needing = [name for name in config.active() if name not in ("ce", "ctc", "slot_ce")]
            raise ValueError(f"losses {', '.join(needing)} need teacher targets")
        if config.logits > 0:
            if teacher.logits is None:
                raise ValueError(
                    "the logits loss needs teacher logits (export targets from a fine-tuned teacher)"
                )
            terms["logits"] = softened_kl(student.logits, teacher.logits, config.temperature)
        terms.update(self._slot_terms(student, teacher, slot_targets))
        if config.sentence > 0:
            if student.projected is None:
                raise ValueError("the sentence loss needs a student with a projection head (teacher_dim > 0)")
            projected, target = student.projected.float(), teacher.sentence.float()
            if config.sentence_distance == "cosine":
                terms["sentence"] = (1 - functional.cosine_similarity(projected, target, dim=-1)).mean()
            else:
                terms["sentence"] = functional.mse_loss(projected, target)
        if config.needs_layers:
            if len(student.hidden_states) != len(teacher.hidden_states):
                raise ValueError(
                    f"{len(student.hidden_states)} student layers but {len(teacher.hidden_states)} teacher layers given"
                )
            if config.hidden > 0:
                values = [
                    hidden_loss(
                        self.hidden_projection(s), t, student.lengths, teacher.token_lengths, config.alignment
                    )
                    for s, t in zip(student.hidden_states, teacher.hidden_states, strict=True)
                ]
                terms["hidden"] = torch.stack(values).mean()
            if config.attention > 0:
                values = [
                    attention_loss(s, t, student.lengths, teacher.token_lengths, config.alignment)
                    for s, t in zip(student.attentions, teacher.attentions, strict=True)
                ]
                terms["attention"] = torch.stack(values).mean()
        if config.ctc > 0:
            if student.ctc_log_probs is None or ctc_targets is None:
                raise ValueError("the ctc loss needs a CTC head and character targets")
            terms["ctc"] = functional.ctc_loss(
                student.ctc_log_probs.transpose(0, 1), ctc_targets, student.lengths, ctc_target_lengths,
                zero_infinity=True,
            )  # fmt: skip
        total = student.logits.new_zeros((), dtype=torch.float32)
        for name, value in terms.items():
            total = total + getattr(config, name) * value
        return LossBreakdown(total, terms)

    def _slot_terms(
        self, student, teacher: TeacherBatch | None, slot_targets: Tensor | None
    ) -> dict[str, Tensor]:
        """``slot_ce`` and ``slot_logits``, each summed over the student's slot heads (when on)."""
        config, heads = self.config, student.slot_logits
        terms: dict[str, Tensor] = {}
        if (config.slot_ce or 0.0) > 0 and heads:
            if slot_targets is None:
                raise ValueError("the slot_ce loss needs the gold slot classes of the batch")
            terms["slot_ce"] = sum(
                functional.cross_entropy(
                    logits.float(), slot_targets[:, i], label_smoothing=config.label_smoothing
                )
                for i, logits in enumerate(heads.values())
            )
        if (config.slot_logits or 0.0) > 0 and heads:
            missing = [name for name in heads if name not in teacher.slot_logits]
            if missing:
                raise ValueError(
                    f"the slot_logits loss needs the teacher's slot logits for {', '.join(missing)} (re-export the "
                    "targets from a teacher trained on these labels, or set distill.slot_logits=0)"
                )
            terms["slot_logits"] = sum(
                softened_kl(logits, teacher.slot_logits[name], config.temperature)
                for name, logits in heads.items()
            )
        return terms


def softened_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of temperature-softened ``[batch, classes]`` logits, x T^2 (Hinton)."""
    teacher_probabilities = (teacher.float() / temperature).softmax(-1)
    student_log_probabilities = (student.float() / temperature).log_softmax(-1)
    kl = functional.kl_div(student_log_probabilities, teacher_probabilities, reduction="batchmean")
    return kl * temperature**2
