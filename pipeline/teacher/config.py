"""The teacher's settings, its error class and the names of its model-dir files.

The lowest layer of the teacher: :mod:`pipeline.teacher.hf_text`, :mod:`pipeline.teacher.model`,
:mod:`pipeline.teacher.train` (fine-tuning) and :mod:`pipeline.teacher.targets` all import from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import SlukdError

TEACHER_VERSION = 1  # bump when the model dir or the targets store changes meaning
PACKAGED_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls", "pooler")
CONFIG_SECTION = "slukd_teacher"  # our part of the model dir's config.json
WEIGHTS_FILE, METRICS_FILE, TRAIN_LOG_FILE = "model.safetensors", "metrics.json", "train_log.csv"
HEAD_PREFIX = "intent_head."
SLOT_HEAD_PREFIX = "slot_heads."  # slot_heads.<i>.weight/.bias, i in the label map's slot order
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
    "sentencepiece.bpe.model",
)  # fmt: skip
# Config keys that do not change the trained weights (left out of the training fingerprint).
RUN_ONLY_KEYS = ("device", "eval_batch_size")


class TeacherError(SlukdError, ValueError):
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
