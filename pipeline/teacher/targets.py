"""The teacher-targets store: what the teacher says about every unique transcript.

:func:`export_targets` runs a teacher (fine-tuned, or the plain pretrained encoder) once per
unique normalised transcript of some manifests and stores, back to back without padding:
intent logits, the sentence vector, and per requested layer the hidden states and the
head-averaged attention probabilities, in float16, with the tokenisation. A teacher with slot
heads adds ``slot_logits.f16`` ``[rows, classes of every slot head, side by side]``; meta's
``slot_heads`` names each head and its classes in that order (stores without it have none).
:class:`TeacherTargets` reads it memory-mapped; ``check`` says what to re-export when a student
asks for layers or a label map the store lacks.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.io import atomic_directory, file_sha256, is_done, mark_done, read_json, write_json
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import manifest_paths, read_manifest, require_transcripts
from pipeline.data.text import normalize_transcript
from pipeline.teacher.config import TEACHER_VERSION, WEIGHTS_FILE, TeacherConfig, TeacherError
from pipeline.teacher.hf_text import (
    batches_by_length,
    cap_max_length,
    pad_token_ids,
    resolve_model_source,
    tokenize_texts,
)
from pipeline.teacher.model import Teacher, check_pooling, load_pretrained_encoder, load_teacher

logger = logging.getLogger(__name__)

META_FILE, INDEX_FILE = "meta.json", "index.json"
TOKEN_IDS_FILE, SENTENCE_FILE, LOGITS_FILE = "token_ids.i32", "sentence.f16", "logits.f16"
HIDDEN_FILE, ATTENTION_FILE, SLOT_LOGITS_FILE = "hidden.f16", "attention.f16", "slot_logits.f16"


@dataclass
class TeacherTarget:
    """What the teacher says about one transcript (float16 arrays, memory-mapped views)."""

    transcript: str  # normalised
    token_ids: np.ndarray  # int32 [T]
    tokens: list[str]  # [T], special tokens included
    logits: np.ndarray | None  # [C]; None for a plain pretrained teacher
    sentence: np.ndarray  # [H]
    hidden: np.ndarray  # [len(layers), T, H], in the order of TeacherTargets.layers
    attention: np.ndarray  # [len(layers), T, T], head-averaged probabilities
    slot_logits: dict[str, np.ndarray]  # slot -> [classes]; empty without slot heads


def export_targets(
    model: str | os.PathLike,
    manifests: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    layers: Sequence[int] | None = None,
    pooling: str | None = None,
    device: str | torch.device = "auto",
    pretrained: bool = False,
    batch_size: int = 64,
    max_length: int | None = None,
) -> TeacherTargets:
    """Compute the teacher's targets for every unique normalised transcript of ``manifests``.

    Args:
        model: a fine-tuned teacher model dir; with ``pretrained``, a plain encoder (hub name,
            local folder, or empty for the packaged all-MiniLM-L6-v2).
        manifests: split -> manifest, or a list of manifests.
        output_dir: the store folder (written atomically; skipped when done with the same inputs).
        layers: transformer layers (1..num_layers) whose hidden states and attention maps are
            kept; ``None``: all; ``[]``: none.
        pooling: sentence vector; ``None``: the teacher's own (``mean`` for a plain encoder).
        device: ``auto``, ``cpu``, ``cuda[:i]``.
        pretrained: export from the plain pretrained encoder (no intent logits).
        batch_size: transcripts per forward pass.
        max_length: token limit; ``None``: the teacher's own (the config default for a plain one).

    Returns:
        The finished store.
    """
    output_dir = Path(output_dir)
    paths = manifest_paths(manifests)
    if not paths:
        raise TeacherError("no manifests given to export teacher targets for")
    if pretrained:
        source = resolve_model_source(model)
        identity = source.identity
    else:
        weights = Path(model) / WEIGHTS_FILE
        if not weights.is_file():
            raise TeacherError(
                f"{model}: not a teacher model dir (no {WEIGHTS_FILE}); run `slukd teacher train` first"
            )
        identity = file_sha256(weights)
    fingerprint = {
        "version": TEACHER_VERSION,
        "teacher": identity,
        "pretrained": pretrained,
        "layers": None if layers is None else [int(layer) for layer in layers],
        "pooling": pooling,
        "max_length": max_length,
        "manifests": {split: file_sha256(path) for split, path in paths.items()},
    }
    if is_done(output_dir, fingerprint):
        logger.info("%s: teacher targets are up to date, skipping", output_dir)
        return TeacherTargets(output_dir)

    split_manifests = {split: read_manifest(path) for split, path in paths.items()}
    for manifest in split_manifests.values():
        require_transcripts(manifest, "the teacher's targets")
    if pretrained:
        teacher = load_pretrained_encoder(
            model,
            pooling or "mean",
            max_length or TeacherConfig.max_length,
            device,
            attn_implementation="eager",
        )
    else:
        teacher = load_teacher(model, device, attn_implementation="eager")
        if max_length is not None:
            teacher.max_length = cap_max_length(max_length, teacher.tokenizer, teacher.model.encoder)
    num_layers = teacher.model.num_layers
    layers = list(range(1, num_layers + 1)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 1 <= layer <= num_layers]
    if bad or len(set(layers)) != len(layers):
        raise TeacherError(
            f"layers must be distinct numbers in 1..{num_layers} (the teacher's transformer layers), got {layers}"
        )

    texts: dict[str, None] = {}
    splits = {}
    for split, manifest in split_manifests.items():
        normalised = [normalize_transcript(utterance.transcript) for utterance in manifest]
        empty = [utterance.id for utterance, text in zip(manifest, normalised, strict=True) if not text]
        if empty:
            raise TeacherError(f"{manifest.path}: utterance {empty[0]}: transcript is empty once normalised")
        texts.update(dict.fromkeys(normalised))
        splits[split] = {
            "manifest": str(paths[split]),
            "utterances": len(manifest),
            "transcripts": len(set(normalised)),
        }
    texts_list = list(texts)
    token_ids, truncated = tokenize_texts(
        teacher.tokenizer, texts_list, teacher.max_length, warn="teacher targets"
    )
    pooling = pooling or teacher.model.pooling
    check_pooling(teacher.model.encoder, pooling)
    logger.info(
        "exporting teacher targets of %s (%s, pooling %s, layers %s) for %d unique transcripts of %d "
        "utterances (%s) on %s",
        teacher.name, "fine-tuned" if teacher.fine_tuned else "plain pretrained", pooling,
        layers, len(texts_list), sum(s["utterances"] for s in splits.values()), ", ".join(splits),
        teacher.device,
    )  # fmt: skip
    start = time.monotonic()
    with atomic_directory(output_dir) as folder:
        order = _write_targets(folder, teacher, token_ids, layers, pooling, batch_size)
        rows = [texts_list[i] for i in order]
        write_json(folder / INDEX_FILE, {
            "transcripts": rows,
            "num_tokens": [len(token_ids[i]) for i in order],
            "tokens": [teacher.tokenizer.convert_ids_to_tokens(token_ids[i]) for i in order],
        })  # fmt: skip
        write_json(folder / META_FILE, {
            "version": TEACHER_VERSION,
            "teacher": teacher.name,
            "model_dir": None if pretrained else str(Path(model).resolve()),
            "fine_tuned": teacher.fine_tuned,
            "has_logits": teacher.fine_tuned,
            "slot_heads": [
                {"name": name, "classes": teacher.labels.slot_classes(name)} for name in teacher.model.slot_names
            ],
            "labels": teacher.labels.to_dict() if teacher.labels is not None else None,
            "num_intents": len(teacher.labels) if teacher.labels is not None else None,
            "num_layers": num_layers,
            "hidden_size": teacher.model.hidden_size,
            "num_attention_heads": int(getattr(teacher.model.encoder.config, "num_attention_heads", 0)),
            "layers": layers,
            "pooling": pooling,
            "max_length": teacher.max_length,
            "dtype": "float16",
            "rows": len(rows),
            "total_tokens": sum(len(ids) for ids in token_ids),
            "truncated": truncated,
            "normalization": "pipeline.data.text.normalize_transcript",
            "splits": splits,
        })  # fmt: skip
        mark_done(folder, fingerprint)
    store = TeacherTargets(output_dir)
    logger.info(
        "%s: %d rows, %d tokens, %.1f MB in %.1f s",
        output_dir, len(store), store.meta["total_tokens"], store.size_bytes / 1e6, time.monotonic() - start,
    )  # fmt: skip
    return store


@torch.no_grad()
def _write_targets(folder: Path, teacher: Teacher, token_ids: list[list[int]], layers: list[int],
                   pooling: str, batch_size: int) -> list[int]:  # fmt: skip
    """Run the teacher over every transcript, appending each row's arrays to the store files;
    returns the row order (indices into ``token_ids``)."""
    model, device, padding = teacher.model, teacher.device, teacher.pad_id
    model.eval()
    order: list[int] = []
    files = {
        name: open(folder / name, "wb")
        for name in (TOKEN_IDS_FILE, SENTENCE_FILE, HIDDEN_FILE, ATTENTION_FILE)
    }
    if teacher.fine_tuned:
        files[LOGITS_FILE] = open(folder / LOGITS_FILE, "wb")
    if model.slot_names:
        files[SLOT_LOGITS_FILE] = open(folder / SLOT_LOGITS_FILE, "wb")
    batches = batches_by_length([len(ids) for ids in token_ids], batch_size)
    try:
        for batch in tqdm(batches, desc="teacher targets", unit="batch"):
            input_ids, attention_mask = pad_token_ids([token_ids[i] for i in batch], padding, device)
            output = model(input_ids, attention_mask, output_layers=bool(layers), sentence_pooling=pooling)
            sentence = output.sentence.float().cpu().numpy().astype(np.float16)
            logits = (
                output.logits.float().cpu().numpy().astype(np.float16) if output.logits is not None else None
            )
            slot_logits = (
                torch.cat(list(output.slot_logits.values()), dim=-1).float().cpu().numpy().astype(np.float16)
                if output.slot_logits
                else None
            )
            if layers:
                hidden = torch.stack([output.hidden_states[layer] for layer in layers], dim=1)  # [B, L, T, H]
                attention = torch.stack([output.attentions[layer - 1].mean(dim=1) for layer in layers], dim=1)
                hidden = hidden.float().cpu().numpy().astype(np.float16)
                attention = attention.float().cpu().numpy().astype(np.float16)  # [B, L, T, T]
            for row, index in enumerate(batch):
                length = len(token_ids[index])
                files[TOKEN_IDS_FILE].write(np.asarray(token_ids[index], dtype=np.int32).tobytes())
                files[SENTENCE_FILE].write(sentence[row].tobytes())
                if logits is not None:
                    files[LOGITS_FILE].write(logits[row].tobytes())
                if slot_logits is not None:
                    files[SLOT_LOGITS_FILE].write(slot_logits[row].tobytes())
                if layers:
                    files[HIDDEN_FILE].write(np.ascontiguousarray(hidden[row, :, :length]).tobytes())
                    files[ATTENTION_FILE].write(
                        np.ascontiguousarray(attention[row, :, :length, :length]).tobytes()
                    )
                order.append(index)
    finally:
        for stream in files.values():
            stream.close()
    return order


class TeacherTargets:
    """Read access to a finished teacher-targets store (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not is_done(self.folder):
            raise TeacherError(
                f"{self.folder}: no finished teacher targets here (run `slukd teacher export`)"
            )
        self.meta = read_json(self.folder / META_FILE)
        index = read_json(self.folder / INDEX_FILE)
        self.transcripts: list[str] = index["transcripts"]
        self.tokens: list[list[str]] = index["tokens"]
        self.num_tokens = np.asarray(index["num_tokens"], dtype=np.int64)
        self.layers: list[int] = list(self.meta["layers"])
        self.hidden_size = int(self.meta["hidden_size"])
        self._row = {transcript: row for row, transcript in enumerate(self.transcripts)}
        rows, tokens, hidden_size = len(self.transcripts), int(self.num_tokens.sum()), self.hidden_size
        depth = len(self.layers)
        self.token_offsets = np.concatenate([[0], np.cumsum(self.num_tokens)])
        self.attention_offsets = np.concatenate([[0], np.cumsum(depth * self.num_tokens**2)])
        self.token_ids = self._open(TOKEN_IDS_FILE, np.int32, (tokens,))
        self.sentence = self._open(SENTENCE_FILE, np.float16, (rows, hidden_size))
        self.logits = (
            self._open(LOGITS_FILE, np.float16, (rows, int(self.meta["num_intents"])))
            if self.meta["has_logits"]
            else None
        )
        self.slot_heads = [(head["name"], len(head["classes"])) for head in self.meta.get("slot_heads") or []]
        width = sum(count for _, count in self.slot_heads)
        self.slot_logits = self._open(SLOT_LOGITS_FILE, np.float16, (rows, width)) if width else None
        self.hidden = self._open(HIDDEN_FILE, np.float16, (depth * tokens, hidden_size))
        self.attention = self._open(ATTENTION_FILE, np.float16, (int(self.attention_offsets[-1]),))

    def _open(self, name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.folder / name, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.transcripts)

    def __contains__(self, transcript: object) -> bool:
        return isinstance(transcript, str) and normalize_transcript(transcript) in self._row

    @property
    def fine_tuned(self) -> bool:
        return bool(self.meta["fine_tuned"])

    @property
    def labels(self) -> LabelSet | None:
        return LabelSet.from_dict(self.meta["labels"]) if self.meta["labels"] is not None else None

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.folder.iterdir() if path.is_file())

    def lookup(self, transcript: str) -> TeacherTarget:
        """The targets of a transcript (normalised first); one the store lacks is an error."""
        key = normalize_transcript(transcript)
        try:
            row = self._row[key]
        except KeyError:
            raise TeacherError(
                f"{self.folder}: no teacher targets for transcript {transcript!r} (normalised: {key!r}); "
                "re-export the targets with the manifest that holds it"
            ) from None
        length, depth = int(self.num_tokens[row]), len(self.layers)
        first = int(self.token_offsets[row])
        hidden = self.hidden[depth * first : depth * (first + length)].reshape(
            depth, length, self.hidden_size
        )
        start = int(self.attention_offsets[row])
        attention = self.attention[start : start + depth * length * length].reshape(depth, length, length)
        return TeacherTarget(
            transcript=key,
            token_ids=self.token_ids[first : first + length],
            tokens=self.tokens[row],
            logits=self.logits[row] if self.logits is not None else None,
            sentence=self.sentence[row],
            hidden=hidden,
            attention=attention,
            slot_logits=self._slot_row(row),
        )

    def _slot_row(self, row: int) -> dict[str, np.ndarray]:
        """Slot name -> the teacher's slot logits of a row (``{}`` without slot heads)."""
        if self.slot_logits is None:
            return {}
        values, start, result = self.slot_logits[row], 0, {}
        for name, count in self.slot_heads:
            result[name] = values[start : start + count]
            start += count
        return result

    def check(self, labels: LabelSet | None, layers: Sequence[int] = ()) -> None:
        """Raise :class:`TeacherError`, saying what to re-export, unless the store fits.

        Args:
            labels: the label map whose intents the student predicts, when the student uses the
                teacher's logits; ``None`` when it does not (then a plain-encoder store fits).
            layers: the teacher layers the student matches.
        """
        missing = [int(layer) for layer in layers if int(layer) not in self.layers]
        if missing:
            beyond = [layer for layer in missing if not 1 <= layer <= self.meta["num_layers"]]
            if beyond:
                raise TeacherError(
                    f"{self.folder}: teacher {self.meta['teacher']} has layers 1..{self.meta['num_layers']}, "
                    f"the student asks for {beyond}"
                )
            wanted = sorted(set(self.layers) | set(missing))
            raise TeacherError(
                f"{self.folder}: teacher targets hold layers {self.layers}, not {missing}; "
                f"re-export them with `slukd teacher export --layers {','.join(map(str, wanted))}`"
            )
        if labels is None:
            return
        if not self.meta["has_logits"]:
            raise TeacherError(
                f"{self.folder}: targets of the plain pretrained encoder have no intent logits; export "
                "them from a fine-tuned teacher (`slukd teacher export --model <teacher dir>`)"
            )
        ours = self.labels
        if ours is None or ours.intents != labels.intents:
            ours_intents = ours.intents if ours is not None else []
            first = next(
                (i for i, (a, b) in enumerate(zip(ours_intents, labels.intents, strict=False)) if a != b),
                min(len(ours_intents), len(labels.intents)),
            )
            raise TeacherError(
                f"{self.folder}: the teacher's label map ({len(ours_intents)} intents) differs from the "
                f"student's ({len(labels.intents)}) first at id {first}; retrain the teacher on this "
                "labels.json (`slukd teacher train`) and re-export its targets"
            )
