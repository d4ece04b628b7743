"""The teacher model: a Hugging Face encoder, a pooled sentence vector and a linear intent head;
its model dir (:func:`save_teacher_dir`, :func:`load_teacher`) and the plain pretrained encoder
(:func:`load_pretrained_encoder`).

**Model dir** (written by :func:`pipeline.teacher.train.train_teacher`)::

    config.json         the encoder's Hugging Face config, plus id2label/label2id and a
                        "slukd_teacher" section: base model, pooling, label map, resolved config
    model.safetensors   encoder weights (Hugging Face names) + intent_head.weight / .bias, and
                        slot_heads.<i>.weight / .bias per slot (the section's "slot_heads" names them)
    tokenizer files     as the tokenizer saves them
    labels.json         copy of the label map

The encoder part loads in any Hugging Face tool (``AutoModel.from_pretrained(model_dir)``, which
reports the two ``intent_head`` tensors as unused); :func:`load_teacher` loads it all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.config import ConfigError, from_dict, to_dict
from pipeline.core.devices import resolve_device
from pipeline.core.io import read_json
from pipeline.data.labels import LABELS_FILENAME, LabelError, LabelSet
from pipeline.data.text import normalize_transcript
from pipeline.scoring.commands import CommandDecoder
from pipeline.teacher.config import (
    CONFIG_SECTION,
    HEAD_PREFIX,
    POOLINGS,
    SLOT_HEAD_PREFIX,
    TEACHER_VERSION,
    WEIGHTS_FILE,
    TeacherConfig,
    TeacherError,
)
from pipeline.teacher.hf_text import (
    ModelSource,
    batches_by_length,
    cap_max_length,
    load_encoder,
    load_tokenizer,
    pad_id,
    pad_token_ids,
    resolve_model_source,
    tokenize_texts,
)


class TeacherOutput(NamedTuple):
    logits: Tensor | None  # [B, C]; None without an intent head
    sentence: Tensor  # [B, H]
    hidden_states: tuple[Tensor, ...] | None  # num_layers + 1 of [B, T, H] (0: embeddings)
    attentions: tuple[Tensor, ...] | None  # num_layers of [B, heads, T, T]
    slot_logits: dict[str, Tensor] = {}  # slot -> [B, classes] (LabelSet.slot_classes); empty: no slot heads


def check_pooling(encoder: nn.Module, pooling: str) -> None:
    """Raise :class:`TeacherError` unless ``pooling`` is known and the encoder can do it."""
    if pooling not in POOLINGS:
        raise TeacherError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
        raise TeacherError(f"{type(encoder).__name__} has no pooler layer; use pooling 'mean' or 'cls'")


def pool_sentence(output: Any, attention_mask: Tensor, pooling: str) -> Tensor:
    """Sentence vector ``[B, H]`` of an encoder output: masked mean, first token, or the pooler."""
    last = output.last_hidden_state
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(last.dtype)
        return (last * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return last[:, 0]
    return output.pooler_output


class TeacherModel(nn.Module):
    """A Hugging Face encoder, a pooled sentence vector, (optionally) a linear intent head, and a
    linear head per slot (``slot_classes``: slot -> classes) on the same pooled vector."""

    def __init__(self, encoder: nn.Module, num_intents: int, pooling: str, dropout: float = 0.1,
                 slot_classes: dict[str, int] | None = None) -> None:  # fmt: skip
        super().__init__()
        check_pooling(encoder, pooling)
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        hidden_size = encoder.config.hidden_size
        self.intent_head = nn.Linear(hidden_size, num_intents) if num_intents else None
        self.slot_names = list(slot_classes or {})
        self.slot_heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in (slot_classes or {}).values())

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, output_layers: bool = False,
                sentence_pooling: str | None = None) -> TeacherOutput:  # fmt: skip
        """Logits from the head's own pooling; ``sentence`` from ``sentence_pooling`` (default: the same)."""
        output = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_layers,
            output_attentions=output_layers,
            return_dict=True,
        )
        pooled = pool_sentence(output, attention_mask, self.pooling)
        dropped = self.dropout(pooled)
        logits = self.intent_head(dropped) if self.intent_head is not None else None
        slots = {name: head(dropped) for name, head in zip(self.slot_names, self.slot_heads, strict=True)}
        if sentence_pooling is not None and sentence_pooling != self.pooling:
            pooled = pool_sentence(output, attention_mask, sentence_pooling)
        return TeacherOutput(
            logits,
            pooled,
            output.hidden_states if output_layers else None,
            output.attentions if output_layers else None,
            slots,
        )


@torch.no_grad()
def intent_logits(model: TeacherModel, token_ids: list[list[int]], batch_size: int, device: torch.device,
                  padding: int) -> np.ndarray:  # fmt: skip
    """float32 intent logits ``[len(token_ids), C]`` in eval mode (the training mode is restored)."""
    return head_logits(model, token_ids, batch_size, device, padding)[0]


@torch.no_grad()
def head_logits(model: TeacherModel, token_ids: list[list[int]], batch_size: int, device: torch.device,
                padding: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """float32 intent logits ``[N, C]`` and slot logits (slot -> ``[N, classes]``) in eval mode."""
    was_training = model.training
    model.eval()
    result = np.zeros((len(token_ids), model.intent_head.out_features), dtype=np.float32)
    slots = {name: np.zeros((len(token_ids), head.out_features), dtype=np.float32)
             for name, head in zip(model.slot_names, model.slot_heads, strict=True)}  # fmt: skip
    for batch in batches_by_length([len(ids) for ids in token_ids], batch_size):
        input_ids, attention_mask = pad_token_ids([token_ids[i] for i in batch], padding, device)
        output = model(input_ids, attention_mask)
        result[batch] = output.logits.float().cpu().numpy()
        for name, values in output.slot_logits.items():
            slots[name][batch] = values.float().cpu().numpy()
    model.train(was_training)
    return result, slots


@dataclass
class Teacher:
    """A loaded teacher: model (encoder + head), tokenizer, label map (None for a plain encoder)."""

    model: TeacherModel
    tokenizer: Any
    labels: LabelSet | None
    name: str  # the base encoder
    max_length: int
    device: torch.device
    config: TeacherConfig = field(default_factory=TeacherConfig)

    @property
    def fine_tuned(self) -> bool:
        return self.labels is not None

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id."""
        return pad_id(self.tokenizer)

    def tokenize(self, transcripts: Sequence[str], warn: str = "") -> list[list[int]]:
        """Token ids (special tokens included) of the normalised transcripts, truncated to
        ``max_length``; truncations are counted in one warning (``warn`` says where)."""
        texts = [normalize_transcript(text) for text in transcripts]
        return tokenize_texts(self.tokenizer, texts, self.max_length, warn)[0]

    def batch(
        self, token_ids: Sequence[Sequence[int]], device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        """Padded ``input_ids`` and ``attention_mask`` of token id lists (on ``device``, default the teacher's)."""
        return pad_token_ids(token_ids, self.pad_id, device or self.device)

    @torch.no_grad()
    def logits(self, transcripts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """float32 intent logits ``[len(transcripts), C]``."""
        if self.model.intent_head is None:
            raise TeacherError(f"{self.name}: a plain pretrained encoder has no intent head")
        return intent_logits(self.model, self.tokenize(transcripts), batch_size, self.device, self.pad_id)

    @torch.no_grad()
    def outputs(
        self, transcripts: Sequence[str], batch_size: int = 128
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """float32 intent logits ``[len(transcripts), C]`` and slot logits (slot -> ``[N, classes]``;
        empty without slot heads)."""
        if self.model.intent_head is None:
            raise TeacherError(f"{self.name}: a plain pretrained encoder has no intent head")
        return head_logits(self.model, self.tokenize(transcripts), batch_size, self.device, self.pad_id)

    def predict(self, transcripts: Sequence[str], batch_size: int = 128) -> list[str]:
        """The intent of each transcript: with a head per slot, decoded jointly with the slots
        (:mod:`pipeline.scoring.commands`, as every model answers), else the intent head's argmax."""
        if self.labels is None:
            raise TeacherError(f"{self.name}: a plain pretrained encoder predicts no intents")
        logits, slots = self.outputs(transcripts, batch_size)
        if slots and set(slots) == set(self.labels.slots):
            decoder = CommandDecoder(self.labels, list(slots))
            return [self.labels.intent(command.intent) for command in decoder.decode(logits, slots)]
        return [self.labels.intent(int(i)) for i in logits.argmax(axis=1)]


def save_teacher_dir(folder: str | os.PathLike, model: TeacherModel, tokenizer: Any, labels: LabelSet,
                     config: TeacherConfig, source: ModelSource) -> None:  # fmt: skip
    """Write a teacher model dir's files into an existing (normally temporary) folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    encoder_config = model.encoder.config
    encoder_config.id2label = dict(enumerate(labels.intents))
    encoder_config.label2id = {intent: i for i, intent in enumerate(labels.intents)}
    setattr(encoder_config, CONFIG_SECTION, {
        "version": TEACHER_VERSION,
        "base_model": source.name,
        "pooling": config.pooling,
        "num_intents": len(labels),
        "labels": labels.to_dict(),
        "config": to_dict(config),
        **({"slot_heads": model.slot_names} if model.slot_names else {}),
    })  # fmt: skip
    encoder_config.save_pretrained(folder)
    tensors = {
        name: value.detach().cpu().contiguous().clone() for name, value in model.encoder.state_dict().items()
    }
    for name, value in model.intent_head.state_dict().items():
        tensors[HEAD_PREFIX + name] = value.detach().cpu().contiguous().clone()
    for name, value in model.slot_heads.state_dict().items():
        tensors[SLOT_HEAD_PREFIX + name] = value.detach().cpu().contiguous().clone()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder / WEIGHTS_FILE, 0o666 & ~umask)  # safetensors writes it private (0600)
    tokenizer.save_pretrained(folder)
    labels.save(folder / LABELS_FILENAME)


def is_teacher_config(config: dict) -> bool:
    """Whether a model dir's parsed ``config.json`` is a slukd teacher's."""
    return isinstance(config.get(CONFIG_SECTION), dict)


def load_teacher(
    model_dir: str | os.PathLike, device: str | torch.device = "cpu", attn_implementation: str | None = None
) -> Teacher:
    """Load a fine-tuned teacher model dir written by :func:`pipeline.teacher.train.train_teacher` (eval mode).

    Args:
        model_dir: the folder.
        device: where to put it (``auto`` picks CUDA when present).
        attn_implementation: passed to transformers; ``"eager"`` returns attention maps.
    """
    from safetensors import safe_open

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise TeacherError(f"{folder}: not a teacher model dir (no config.json)")
    section = read_json(folder / "config.json").get(CONFIG_SECTION)
    if not isinstance(section, dict):
        raise TeacherError(
            f"{folder}: config.json has no {CONFIG_SECTION!r} section; not a teacher trained by slukd"
        )
    if not (folder / WEIGHTS_FILE).is_file():
        raise TeacherError(f"{folder}: no {WEIGHTS_FILE}")
    source = ModelSource(str(folder), str(folder), str(folder))
    tokenizer = load_tokenizer(source)
    try:
        labels = LabelSet.from_dict(section["labels"])
        config = from_dict(TeacherConfig, section["config"])
    except (LabelError, ConfigError, KeyError) as error:
        raise TeacherError(f"{folder}: bad {CONFIG_SECTION} section in config.json ({error})") from None
    slot_names = section.get("slot_heads") or []
    unknown = [name for name in slot_names if name not in labels.slots]
    if unknown:
        raise TeacherError(f"{folder}: slot head(s) {', '.join(unknown)} are not slots of its label map")
    encoder = load_encoder(source, attn_implementation)
    slot_classes = {name: len(labels.slot_classes(name)) for name in slot_names}
    model = TeacherModel(
        encoder, len(labels), section.get("pooling", config.pooling), config.dropout, slot_classes
    )
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        head = {
            key[len(HEAD_PREFIX) :]: weights.get_tensor(key)
            for key in weights.keys()
            if key.startswith(HEAD_PREFIX)
        }
        slot_state = {
            key[len(SLOT_HEAD_PREFIX) :]: weights.get_tensor(key)
            for key in weights.keys()
            if key.startswith(SLOT_HEAD_PREFIX)
        }
    if set(head) != {"weight", "bias"}:
        raise TeacherError(f"{folder}: {WEIGHTS_FILE} lacks the intent head ({HEAD_PREFIX}weight/bias)")
    try:
        model.intent_head.load_state_dict(head)
        model.slot_heads.load_state_dict(slot_state)
    except RuntimeError:
        raise TeacherError(
            f"{folder}: intent or slot heads do not fit {len(labels)} intents, slots {slot_classes} x hidden "
            f"size {model.hidden_size}"
        ) from None
    device = resolve_device(device)
    model.to(device).eval()
    max_length = cap_max_length(config.max_length, tokenizer, encoder)
    return Teacher(
        model, tokenizer, labels, section.get("base_model", str(folder)), max_length, device, config
    )


def load_pretrained_encoder(
    model: str | os.PathLike = "",
    pooling: str = "mean",
    max_length: int = TeacherConfig.max_length,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> Teacher:
    """A plain (not fine-tuned) encoder as a teacher without intent head."""
    source = resolve_model_source(model)
    tokenizer = load_tokenizer(source)
    encoder = load_encoder(source, attn_implementation)
    teacher_model = TeacherModel(encoder, 0, pooling)
    device = resolve_device(device)
    teacher_model.to(device).eval()
    return Teacher(
        teacher_model, tokenizer, None, source.name, cap_max_length(max_length, tokenizer, encoder), device,
        TeacherConfig(model=str(model), pooling=pooling, max_length=max_length),
    )  # fmt: skip
