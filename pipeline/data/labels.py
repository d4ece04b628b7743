"""The label map: an ordered list of intents, and slot values where the corpus has slots.

``labels.json`` sits beside the manifests and is copied into every model dir, so that an
intent id never changes meaning silently::

    {"intents": ["activate_lamp_none", ...],
     "slots": {"action": ["activate", ...], "object": [...], "location": [...]}}

Slots as model outputs: every slot has a head whose classes are :meth:`LabelSet.slot_classes`,
the slot's values in the map's order with :data:`NO_VALUE` (``none``) appended LAST, unless the
map already lists ``none`` as a value (FSC's ``location``), where it keeps its place. Appending
last keeps every value's class id equal to its index in ``labels.json``. A manifest line without
a slot means ``none`` (:meth:`LabelSet.slot_targets`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_write_text

LABELS_FILENAME = "labels.json"
UNKNOWN_INTENT = "unknown"  # the intent of what is not a command (pipeline.data.open_set)
NO_VALUE = "none"  # the class of a slot an utterance does not fill


class LabelError(SlukdError, ValueError):
    """An invalid label map, or a label the map does not contain."""


@dataclass
class LabelSet:
    """Ordered intents (index = class id) and, optionally, ordered values per slot."""

    intents: list[str]
    slots: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.intents = list(self.intents)
        self.slots = {name: list(values) for name, values in self.slots.items()}
        self.validate()
        self._index = {intent: i for i, intent in enumerate(self.intents)}
        self._slot_index = {
            name: {value: i for i, value in enumerate(self.slot_classes(name))} for name in self.slots
        }

    def validate(self) -> None:
        """Raise :class:`LabelError` unless intents and slot values are unique, non-empty strings."""
        if not self.intents:
            raise LabelError("label map has no intents")
        _check_unique("intent", self.intents)
        for name, values in self.slots.items():
            if not isinstance(name, str) or not name:
                raise LabelError(f"slot name must be a non-empty string, got {name!r}")
            _check_unique(f"slot {name!r} value", values)

    def __len__(self) -> int:
        return len(self.intents)

    def __contains__(self, intent: object) -> bool:
        return intent in self._index

    @property
    def num_intents(self) -> int:
        return len(self.intents)

    def index(self, intent: str) -> int:
        """Class id of ``intent``; an unknown intent is an error that names it."""
        try:
            return self._index[intent]
        except KeyError:
            raise LabelError(
                f"unknown intent {intent!r} (label map has {len(self.intents)} intents)"
            ) from None

    def intent(self, index: int) -> str:
        return self.intents[index]

    def check_slots(self, slots: dict[str, str]) -> None:
        """Raise :class:`LabelError` if a slot name or value is not in the map."""
        for name, value in slots.items():
            if name not in self.slots:
                raise LabelError(f"unknown slot {name!r} (known: {', '.join(self.slots) or 'none'})")
            if value not in self.slots[name] and value != NO_VALUE:
                raise LabelError(f"unknown value {value!r} for slot {name!r}")

    @property
    def slot_names(self) -> list[str]:
        """The slots, in the map's order (the order of the models' slot heads)."""
        return list(self.slots)

    def slot_classes(self, name: str) -> list[str]:
        """The classes of a slot's head: its values, then ``none`` unless already a value."""
        try:
            values = self.slots[name]
        except KeyError:
            raise LabelError(f"unknown slot {name!r} (known: {', '.join(self.slots) or 'none'})") from None
        return list(values) if NO_VALUE in values else [*values, NO_VALUE]

    def slot_class_counts(self) -> dict[str, int]:
        """Classes per slot head, in the map's order (``{}`` without slots)."""
        return {name: len(self.slot_classes(name)) for name in self.slots}

    def slot_targets(self, slots: dict[str, str]) -> list[int]:
        """Class id per slot head (map order) of an utterance's ``slots``; a missing slot is ``none``."""
        self.check_slots(slots)
        return [self._slot_index[name][slots.get(name, NO_VALUE)] for name in self.slots]

    def to_dict(self) -> dict:
        return {"intents": list(self.intents), "slots": {k: list(v) for k, v in self.slots.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        if not isinstance(data, dict) or "intents" not in data:
            raise LabelError("label map must be an object with an 'intents' list")
        intents = data["intents"]
        slots = data.get("slots") or {}
        if not isinstance(intents, list) or not isinstance(slots, dict):
            raise LabelError("'intents' must be a list and 'slots' an object")
        return cls(intents=intents, slots=slots)

    @classmethod
    def from_utterances(cls, utterances: Iterable, sort: bool = True) -> LabelSet:
        """Build a map from the intents (and slot values) seen in some utterances."""
        intents: dict[str, None] = {}
        slots: dict[str, dict[str, None]] = {}
        for utterance in utterances:
            intents[utterance.intent] = None
            for name, value in utterance.slots.items():
                slots.setdefault(name, {})[value] = None
        order = sorted if sort else list
        return cls(
            intents=order(intents),
            slots={name: order(values) for name, values in sorted(slots.items())},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``labels.json`` atomically; a folder gets ``labels.json`` inside it."""
        path = Path(path)
        if path.is_dir():
            path = path / LABELS_FILENAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelSet:
        """Read ``labels.json`` (or the one inside a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / LABELS_FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabelError(f"{path}: label map not found") from None
        except json.JSONDecodeError as error:
            raise LabelError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        try:
            return cls.from_dict(data)
        except LabelError as error:
            raise LabelError(f"{path}: {error}") from None


def _split_intent(
    labels: LabelSet, intent: str, order: Sequence[str], separator: str
) -> dict[str, str] | None:
    """One value per slot, in ``order``, that joined by ``separator`` give ``intent``; else None."""
    if not order:
        return {} if intent == "" else None
    name, last = order[0], len(order) == 1
    for value in sorted(labels.slots[name], key=len, reverse=True):
        if last and intent == value:
            return {name: value}
        if not last and intent.startswith(value + separator):
            found = _split_intent(labels, intent[len(value) + len(separator) :], order[1:], separator)
            if found is not None:
                return {name: value, **found}
    return None


def intent_slot_values(labels: LabelSet, intent: str, separator: str = "_") -> dict[str, str]:
    """The slot values one intent's name carries (``action_object_location``), in the label map's
    slot order; the slot names are tried in that order first, then in every other order; ``{}``
    when the map has no slots or the name does not split into one value per slot."""
    names = list(labels.slots)
    for order in itertools.permutations(names) if names else ():
        found = _split_intent(labels, intent, order, separator)
        if found is not None:
            return {name: found[name] for name in names}
    return {}


def intent_slot_table(labels: LabelSet, separator: str = "_") -> list[dict[str, str]] | None:
    """Slot values of every intent, read off the names with one slot order for all of them (as
    :func:`intent_slot_values`); ``None`` when the map has no slots or some intent does not split.
    The ``unknown`` intent (a model trained to reject) carries no slot: every slot is ``none``."""
    names = list(labels.slots)
    nothing = dict.fromkeys(names, NO_VALUE)
    for order in itertools.permutations(names) if names else ():
        table = [
            nothing if intent == UNKNOWN_INTENT else _split_intent(labels, intent, order, separator)
            for intent in labels.intents
        ]
        if all(entry is not None for entry in table) and any(entry is not nothing for entry in table):
            return [{name: entry[name] for name in names} for entry in table]  # type: ignore[index]
    return None


def _check_unique(what: str, values: list) -> None:
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value:
            raise LabelError(f"{what} must be a non-empty string, got {value!r}")
        if value in seen:
            raise LabelError(f"duplicate {what} {value!r}")
        seen.add(value)
