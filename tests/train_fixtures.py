"""Shared by the training tests: a tiny synthetic corpus with fbank stores, TrainInputs for it,
and tiny random pretrained encoders saved to folders (loaded through the real from_pretrained path)."""

from __future__ import annotations

from pathlib import Path

import torch

from data_prep.synthetic.generate import SyntheticConfig, prepare_synthetic
from pipeline.frontends.feature_store import ExtractionOptions, compute_feature_store
from pipeline.training.train import TrainInputs


def make_corpus(root: Path) -> Path:
    """The ``tiny`` synthetic corpus (espeak voices) with fbank stores of train and valid."""
    data = root / "tiny"
    prepare_synthetic(data, SyntheticConfig(size="tiny", seed=0, engines=["espeak"]))
    options = ExtractionOptions(device="cpu", num_workers=0)
    for split in ("train", "valid"):
        compute_feature_store(data / "manifests" / f"{split}.jsonl", data / "fbank" / split, options=options)
    return data


def inputs_for(data: Path, **overrides) -> TrainInputs:
    fields = dict(
        train_manifest=data / "manifests/train.jsonl", valid_manifest=data / "manifests/valid.jsonl",
        train_features=data / "fbank/train", valid_features=data / "fbank/valid",
    )  # fmt: skip
    fields.update(overrides)
    return TrainInputs(**fields)


def save_tiny_whisper(folder: Path, mels: int = 80, positions: int = 200, encoder_layers: int = 2) -> Path:
    """A tiny random ``WhisperForConditionalGeneration`` (width 16) saved with ``save_pretrained``;
    ``positions`` encoder frames = ``positions / 50`` seconds at most."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=60, num_mel_bins=mels, d_model=16, encoder_layers=encoder_layers, encoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
        max_source_positions=positions, max_target_positions=8, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    return folder


def save_tiny_wav2vec2(folder: Path) -> Path:
    """A tiny random wav2vec2 encoder (2 layers, width 32, 50 Hz frames like wav2vec2-base's) saved
    with ``save_pretrained``."""
    import transformers

    tiny = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
        conv_stride=(20, 16), conv_kernel=(20, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModel.from_config(tiny).save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, words: set[str], layers: int = 2) -> Path:
    """A random BERT (width 32) with a WordPiece vocabulary of ``words``, saved offline."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def make_teacher_targets(corpus: Path, root: Path) -> Path:
    """Targets with intent logits, hidden states and attention maps for train and valid, from the
    tiny BERT fine-tuned for two epochs on the corpus (seconds)."""
    from pipeline.data.manifest import read_manifest
    from pipeline.data.text import normalize_transcript
    from pipeline.teacher.targets import export_targets
    from pipeline.teacher.train import TeacherConfig, train_teacher

    manifests = {split: corpus / f"manifests/{split}.jsonl" for split in ("train", "valid", "test")}
    words = {word for path in manifests.values() for utterance in read_manifest(path)
             for word in normalize_transcript(utterance.transcript).split()}  # fmt: skip
    teacher = TeacherConfig(
        model=str(save_tiny_bert(root / "bert", words)), epochs=2, learning_rate=1e-3,
        freeze_embeddings=False, device="cpu",
    )  # fmt: skip
    train_teacher(manifests, root / "teacher", teacher)
    del manifests["test"]
    export_targets(root / "teacher", manifests, root / "targets", device="cpu")
    return root / "targets"
