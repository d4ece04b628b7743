"""Fine-tuning a pretrained speech encoder inside a student: what trains, at which learning rate.

Every pretrained family (``whisper``, ``hf``) describes its pretrained part as
:class:`PretrainedParts`, bottom to top:

- ``stem``: the convolutional front of the encoder (wav2vec2's CNN feature encoder, Whisper's
  two convolutions);
- ``embedding`` (may be empty): between the stem and the first layer (wav2vec2's feature
  projection, positional convolution, pre-encoder layer norm, mask embedding); it trains only
  when every layer trains;
- ``layers``: the repeated transformer layers, bottom to top;
- ``top``: pretrained modules above the last layer (a final layer norm).

Everything else in the student (extra transformer layers, pooling, heads, projections) is
*new*: it always trains at the base learning rate.

A freeze spec (``student.freeze`` in a config) picks what of the pretrained part trains:

=================  ============================================================================
``encoder``        all of the pretrained part frozen; only the new parts train
``top:N``          the top N pretrained layers and ``top`` train; the stem, the embedding and
                   lower layers are frozen (``top:0`` is ``encoder``; N >= the layer count is
                   ``stem``)
``stem``           everything but the stem trains (wav2vec2's usual recipe: the CNN feature
                   encoder stays frozen, as ``freeze_feature_encoder()`` does)
``none``           full fine-tuning, the stem included
=================  ============================================================================

:func:`parameter_groups` turns the trainable parameters into AdamW groups: new parts at ``lr``,
the top pretrained layer (and ``top``) at ``pretrained_lr``, each lower layer a further factor
``layer_decay`` down, the embedding and the stem one factor below the bottom layer. Biases and normalisation
weights (every parameter with at most one dimension) get no weight decay. Frozen parameters are
left out. :func:`group_lr_lambdas` gives one ``LambdaLR`` factor per group, so the pretrained
groups can stay at zero for a number of steps and then warm up on their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from torch import nn

from pipeline.core.errors import SlukdError

FREEZE_MODES = ("encoder", "top:N", "stem", "none")


class FreezeSpecError(SlukdError, ValueError):
    """A ``freeze`` value that is not one of :data:`FREEZE_MODES`."""


@dataclass(frozen=True)
class FreezeSpec:
    """A parsed freeze spec; build it with :meth:`parse`.

    Attributes:
        mode: ``"encoder"``, ``"top"``, ``"stem"`` or ``"none"``.
        top_layers: N of ``top:N`` (0 for the other modes).
    """

    mode: str
    top_layers: int = 0

    @classmethod
    def parse(cls, text: str | FreezeSpec) -> FreezeSpec:
        """Parse ``"encoder"``, ``"top:N"``, ``"stem"`` or ``"none"`` (case and spaces ignored)."""
        if isinstance(text, FreezeSpec):
            return text
        value = str(text).strip().lower()
        if value in ("encoder", "stem", "none"):
            return cls(value)
        if value.startswith("top:"):
            count = value[4:].strip()
            if count.isdigit():
                return cls("top", int(count))
        raise FreezeSpecError(f"freeze must be one of {', '.join(FREEZE_MODES)} (N >= 0), got {text!r}")

    def __str__(self) -> str:
        return f"top:{self.top_layers}" if self.mode == "top" else self.mode

    def trainable_layers(self, num_layers: int) -> int:
        """How many of ``num_layers`` pretrained layers (counted from the top) train."""
        if self.mode == "encoder":
            return 0
        if self.mode == "top":
            return min(self.top_layers, num_layers)
        return num_layers

    def stem_trains(self) -> bool:
        """Whether the stem trains (only under ``none``)."""
        return self.mode == "none"


PretrainedItem = nn.Module | nn.Parameter


@dataclass
class PretrainedParts:
    """The pretrained part of a student, bottom to top (see the module docstring).

    ``stem``, ``embedding`` and ``top`` may hold bare parameters too (wav2vec2's
    ``masked_spec_embed`` belongs to no submodule).
    """

    layers: Sequence[nn.Module]
    stem: Sequence[PretrainedItem] = field(default_factory=tuple)
    top: Sequence[PretrainedItem] = field(default_factory=tuple)
    embedding: Sequence[PretrainedItem] = field(default_factory=tuple)

    def items(self) -> tuple[PretrainedItem, ...]:
        """Every part, bottom to top."""
        return (*self.stem, *self.embedding, *self.layers, *self.top)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every pretrained parameter once, trainable or not."""
        seen: set[int] = set()
        for item in self.items():
            for parameter in _parameters_of(item):
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield parameter


def _parameters_of(item: PretrainedItem) -> Iterator[nn.Parameter]:
    if isinstance(item, nn.Parameter):
        yield item
    else:
        yield from item.parameters()


def _set_trainable(items: Iterable[PretrainedItem], trainable: bool) -> None:
    for item in items:
        for parameter in _parameters_of(item):
            parameter.requires_grad_(trainable)


def apply_freeze(parts: PretrainedParts, spec: FreezeSpec | str) -> int:
    """Set ``requires_grad`` on the pretrained part as ``spec`` says.

    Only the pretrained part is touched; new parts keep whatever they had.

    Returns:
        How many pretrained layers train (they are always the top ones).
    """
    spec = FreezeSpec.parse(spec)
    trainable = spec.trainable_layers(parts.num_layers)
    first_trainable = parts.num_layers - trainable
    _set_trainable(parts.stem, spec.stem_trains())
    _set_trainable(parts.embedding, trainable == parts.num_layers)
    for index, layer in enumerate(parts.layers):
        _set_trainable([layer], index >= first_trainable)
    _set_trainable(parts.top, trainable > 0)
    return trainable


def hold_frozen_in_eval(parts: PretrainedParts) -> None:
    """Put every fully frozen pretrained module in eval mode (no dropout, no masking).

    Call it at the end of the student's ``train()``: a frozen encoder then gives the same
    output for the same input in training and evaluation (and a store of its outputs stays
    valid). Modules without parameters and bare parameters are left alone.
    """
    for item in parts.items():
        if isinstance(item, nn.Parameter):
            continue
        parameters = list(item.parameters())
        if parameters and not any(parameter.requires_grad for parameter in parameters):
            item.eval()


def _split_decay(
    parameters: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float | None, pretrained: bool
) -> list[dict]:
    decay, no_decay = [], []
    for parameter in parameters:
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = []
    if decay:
        group = {"params": decay, "lr": lr, "name": name, "pretrained": pretrained}
        if weight_decay is not None:  # None: the optimiser's default applies
            group["weight_decay"] = weight_decay
        groups.append(group)
    if no_decay:
        groups.append(
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}.no_decay",
             "pretrained": pretrained}
        )  # fmt: skip
    return groups


def new_parameter_groups(
    modules: Iterable[nn.Module],
    lr: float,
    weight_decay: float | None = None,
    exclude: Iterable[nn.Parameter] = (),
) -> list[dict]:
    """AdamW groups for trainable parameters of ``modules`` that are not in ``exclude``.

    For parts outside the student that train with it (the loss's projection W^H).
    """
    excluded = {id(parameter) for parameter in exclude}
    seen: set[int] = set()
    parameters = []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in excluded and id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
    return _split_decay(parameters, "new", lr, weight_decay, pretrained=False)


def parameter_groups(
    new: Iterable[nn.Module],
    pretrained: PretrainedParts,
    lr: float,
    pretrained_lr: float,
    layer_decay: float = 1.0,
    weight_decay: float | None = None,
) -> list[dict]:
    """AdamW parameter groups for a student with a pretrained part.

    Args:
        new: modules whose trainable parameters outside ``pretrained`` train at ``lr`` (passing
            the whole student is fine: its pretrained parameters are taken out).
        pretrained: the pretrained part; its frozen parameters are left out.
        lr: learning rate of the new parts.
        pretrained_lr: learning rate of the top pretrained layer and of ``top``.
        layer_decay: factor per layer below the top (1.0: all pretrained layers alike).
        weight_decay: AdamW weight decay of matrices; None leaves the key out, so the optimiser's
            default (``AdamW(groups, weight_decay=...)``) applies. Biases and norms always get 0.

    Returns:
        Groups with ``params``, ``lr``, ``weight_decay``, ``name`` (``new``, ``top``,
        ``layer_<i>`` counted from 0 at the bottom, ``embedding``, ``stem``; ``.no_decay`` appended for the
        biases and norms) and ``pretrained`` (bool, for :func:`group_lr_lambdas`). Empty groups
        are dropped.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive, got {lr}")
    if not (pretrained_lr >= 0 and math.isfinite(pretrained_lr)):
        raise ValueError(f"pretrained_lr must be >= 0, got {pretrained_lr}")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups = new_parameter_groups(new, lr, weight_decay, exclude=pretrained.parameters())
    top_index = pretrained.num_layers - 1
    top = [p for item in pretrained.top for p in _parameters_of(item)]
    groups += _split_decay(top, "top", pretrained_lr, weight_decay, pretrained=True)
    for index in range(top_index, -1, -1):
        layer_lr = pretrained_lr * layer_decay ** (top_index - index)
        groups += _split_decay(
            pretrained.layers[index].parameters(), f"layer_{index}", layer_lr, weight_decay, pretrained=True
        )
    below_lr = pretrained_lr * layer_decay**pretrained.num_layers
    embedding = [p for item in pretrained.embedding for p in _parameters_of(item)]
    groups += _split_decay(embedding, "embedding", below_lr, weight_decay, pretrained=True)
    stem = [p for item in pretrained.stem for p in _parameters_of(item)]
    groups += _split_decay(stem, "stem", below_lr, weight_decay, pretrained=True)
    _check_disjoint(groups)
    return groups


def _check_disjoint(groups: list[dict]) -> None:
    seen: set[int] = set()
    for group in groups:
        for parameter in group["params"]:
            if id(parameter) in seen:
                raise ValueError(f"a parameter of group {group['name']!r} is in two groups")
            seen.add(id(parameter))


def group_lr_lambdas(
    groups: Sequence[dict],
    schedule: Callable[[int], float],
    pretrained_freeze_steps: int = 0,
    pretrained_warmup_steps: int = 0,
) -> list[Callable[[int], float]]:
    """One ``LambdaLR`` factor per group: ``LambdaLR(optimizer, group_lr_lambdas(groups, schedule))``.

    New groups follow ``schedule``. Groups with ``pretrained=True`` are 0 for the first
    ``pretrained_freeze_steps`` steps, then follow ``schedule`` times a linear ramp from 0 to 1
    over ``pretrained_warmup_steps`` (none when 0). The lambdas are plain functions, so
    ``LambdaLR.state_dict`` stores nothing of them and a checkpoint loads with
    ``weights_only=True``.
    """
    if pretrained_freeze_steps < 0 or pretrained_warmup_steps < 0:
        raise ValueError("pretrained_freeze_steps and pretrained_warmup_steps must be >= 0")

    def pretrained_factor(step: int) -> float:
        if step < pretrained_freeze_steps:
            return 0.0
        ramp = 1.0
        if pretrained_warmup_steps:
            ramp = min(1.0, (step - pretrained_freeze_steps + 1) / pretrained_warmup_steps)
        return schedule(step) * ramp

    return [pretrained_factor if group.get("pretrained") else schedule for group in groups]
