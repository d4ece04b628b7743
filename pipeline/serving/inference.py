"""Intent recognition on audio files or arrays, from a student model dir or an exported ONNX file.

    recognizer = IntentRecognizer.from_pretrained("exp/run/student")   # or "model.onnx", or a cascade dir
    for result in recognizer.predict(["a.wav", "b.flac"], top_k=3, threshold=0.5):
        print(result.intent, result.confidence, result.slots)

Waveform -> the model's front-end (Kaldi fbank + the model's global CMVN for the transformer
family) -> student, in length-sorted batches. A model dir needs only its ``config.json`` and
``model.safetensors`` (no teacher, no corpus, no pickle, no training code); it is read by
:mod:`pipeline.serving.model_dir`. An ``.onnx`` file carries labels, sample rate and front-end config
in its metadata (:data:`pipeline.serving.model_dir.ONNX_METADATA_KEYS`) and runs on onnxruntime. A
cascade dir (:mod:`pipeline.cascade.model`: an ASR, then the fine-tuned teacher on its hypothesis) is
the baseline the students are measured against; its hypothesis is the prediction's transcript.

Limits: an input longer than ``max_seconds`` (default :data:`MAX_SECONDS`) is refused with an
:class:`~pipeline.data.audio.AudioError` that names it and the limit (checked from the header before
decoding), so a long recording can never exhaust memory; :meth:`IntentRecognizer.predict_segments`
answers its speech segments instead. Empty inputs are refused the same way.

Saying "unknown" (:mod:`pipeline.serving.rejection`): with ``threshold="auto"`` (the default) a
model's calibrated rejection applies: no speech (the model does not run), its ``unknown`` class,
or a score below the threshold answer ``"unknown"`` with a ``reason``. A model trained on
trimmed audio (``trim_silence`` in its config) gets its input trimmed the same way. A batch holds at most ``batch_size`` inputs and ``max_batch_seconds`` of
padded audio.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.devices import resolve_device
from pipeline.core.errors import SlukdError
from pipeline.data.audio import SAMPLE_RATE, AudioError, audio_info, read_audio, resample, to_mono
from pipeline.data.batching import batches_by_duration
from pipeline.data.labels import LabelSet, intent_slot_values
from pipeline.scoring.commands import CommandDecoders
from pipeline.serving.inputs import expand_inputs, find_audio_files, pad_waveforms
from pipeline.serving.model_dir import ONNX_FORMAT, ONNX_FORMAT_VERSION, load_model_dir
from pipeline.serving.rejection import (
    NO_SPEECH,
    UNKNOWN_INTENT,
    Rejection,
    no_command_reason,
    rejection_from_config,
    rejection_from_metadata,
    resolve_rejection,
    screen,
)
from pipeline.serving.segments import cut, segment_recording
from pipeline.students.ctc import greedy_ctc

logger = logging.getLogger(__name__)

MAX_SECONDS = 60.0  # longest input accepted; longer recordings are refused, not cropped
MAX_BATCH_SECONDS = 480.0  # padded audio per batch (bounds fbank and attention memory)

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


class InferenceError(SlukdError, RuntimeError):
    """An exported model that cannot be loaded or run (missing file, an incompatible version).

    Problems with a student model dir are :class:`pipeline.serving.model_dir.ModelDirError`.
    """


@dataclass
class Prediction:
    """What the model says about one input."""

    intent: str
    confidence: float
    top_k: list[tuple[str, float]]
    slots: dict[str, str]
    duration: float  # seconds of audio
    transcript: str | None = None  # greedy CTC decoding with a CTC head; a cascade's ASR hypothesis
    source: str | None = None  # the file, or ``array[i]``
    reason: str | None = None  # why the intent is "unknown" (pipeline.serving.rejection), else None
    start: float | None = None  # seconds into the recording, for a segment of one (predict_segments)
    end: float | None = None
    # with slot heads (pipeline.scoring.commands): each slot head's probability of its value, and
    # the whole command's confidence (intent x every slot)
    slot_confidence: dict[str, float] = field(default_factory=dict)
    command_confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``slukd predict`` line without ``file``)."""
        result: dict[str, Any] = {} if self.start is None else {"start": self.start, "end": self.end}
        result |= {"intent": self.intent} | ({"reason": self.reason} if self.reason else {})
        result |= {
            "confidence": round(self.confidence, 6),
            "top_k": [[intent, round(probability, 6)] for intent, probability in self.top_k],
            "slots": self.slots,
            "duration": round(self.duration, 4),
        }
        if self.command_confidence is not None:
            result["slot_confidence"] = {
                name: round(value, 6) for name, value in self.slot_confidence.items()
            }
            result["command_confidence"] = round(self.command_confidence, 6)
        if self.transcript is not None:
            result["transcript"] = self.transcript
        return result


@dataclass
class ModelOutput:
    """One batch through a backend."""

    logits: np.ndarray  # [batch, intents]
    ctc_log_probs: np.ndarray | None = None  # [batch, frames, vocab]
    ctc_lengths: np.ndarray | None = None  # [batch]
    transcripts: list[str] | None = None  # a cascade's normalised ASR hypotheses
    slot_logits: dict[str, np.ndarray] = field(default_factory=dict)  # slot -> [batch, classes] (slot heads)


class TorchBackend:
    """A student model dir (:func:`pipeline.serving.model_dir.load_model_dir`): its front-end, then the student."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu") -> None:
        self.device = resolve_device(device)
        loaded = load_model_dir(model_dir, self.device)
        self.student = loaded.model
        self.frontend = loaded.frontend
        self.labels = loaded.labels
        self.sample_rate = loaded.frontend.sample_rate
        self.ctc_characters: str | None = loaded.ctc_characters
        self.max_seconds: float | None = getattr(loaded.model, "max_input_seconds", None)  # the family's own
        self.rejection, self.trim_silence = rejection_from_config(loaded.config, str(model_dir))

    @torch.inference_mode()
    def __call__(self, waveforms: np.ndarray, lengths: np.ndarray) -> ModelOutput:
        features, counts = self.frontend(
            torch.from_numpy(waveforms).to(self.device), torch.from_numpy(lengths).to(self.device)
        )
        output = self.student(features, counts)
        ctc = output.ctc_log_probs
        return ModelOutput(
            logits=output.logits.float().cpu().numpy(),
            ctc_log_probs=None if ctc is None else ctc.float().cpu().numpy(),
            slot_logits={name: values.float().cpu().numpy() for name, values in output.slot_logits.items()},
            ctc_lengths=None if ctc is None else output.lengths.cpu().numpy(),
        )


class OnnxBackend:
    """An exported graph (:mod:`pipeline.serving.export`) on onnxruntime."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise InferenceError(f"{path}: ONNX model not found")
        try:
            import onnxruntime
        except ImportError:
            raise InferenceError("onnxruntime is not installed (pip install 'slukd[export]')") from None
        options = onnxruntime.SessionOptions()
        threads = threads or _torch_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:
            raise InferenceError(f"{path}: cannot load ONNX model ({_first_line(error)})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if metadata.get("slukd_format") != ONNX_FORMAT:
            raise InferenceError(
                f"{path}: not a slukd export (metadata slukd_format is missing or different)"
            )
        if int(metadata.get("slukd_format_version", "0")) > ONNX_FORMAT_VERSION:
            raise InferenceError(
                f"{path}: export format version {metadata['slukd_format_version']} is newer than this slukd "
                f"reads (up to {ONNX_FORMAT_VERSION})"
            )
        try:
            self.labels = LabelSet.from_dict(json.loads(metadata["labels"]))
            self.sample_rate = int(metadata["sample_rate"])
            self.max_seconds = float(metadata["max_seconds"]) if metadata.get("max_seconds") else None
            self.rejection, self.trim_silence = rejection_from_metadata(metadata, str(path))
        except (KeyError, ValueError) as error:
            raise InferenceError(f"{path}: bad metadata ({_first_line(error)})") from None
        self.ctc_characters = metadata.get("ctc_characters") or None
        self.outputs = [output.name for output in self.session.get_outputs()]
        # slot -> its output (metadata "slot_heads", pipeline.serving.export); none in older exports
        heads = json.loads(metadata.get("slot_heads") or "[]")
        self.slot_outputs = {head["name"]: head["output"] for head in heads if head["output"] in self.outputs}

    def __call__(self, waveforms: np.ndarray, lengths: np.ndarray) -> ModelOutput:
        values = self.session.run(None, {"waveforms": waveforms, "lengths": lengths})
        named = dict(zip(self.outputs, values, strict=True))
        return ModelOutput(
            logits=named["logits"],
            ctc_log_probs=named.get("ctc_log_probs"),
            ctc_lengths=named.get("ctc_lengths"),
            slot_logits={name: named[output] for name, output in self.slot_outputs.items()},
        )


class CascadeBackend:
    """A cascade dir (:func:`pipeline.cascade.model.load_cascade`): the ASR, then the teacher on its text."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu") -> None:
        from pipeline.cascade.model import load_cascade

        self.cascade = load_cascade(folder, str(resolve_device(device)))
        self.labels = self.cascade.labels
        self.sample_rate = SAMPLE_RATE
        self.ctc_characters: str | None = None
        self.max_seconds: float | None = None

    def __call__(self, waveforms: np.ndarray, lengths: np.ndarray) -> ModelOutput:
        clips = [waveforms[row, : int(length)] for row, length in enumerate(lengths)]
        output = self.cascade.predict(clips)
        return ModelOutput(
            logits=output.logits, transcripts=output.hypotheses, slot_logits=output.slot_logits
        )


def _torch_threads() -> int:
    return max(1, torch.get_num_threads())


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class IntentRecognizer:
    """Spoken intent recognition with a trained student (PyTorch model dir or ONNX export)."""

    def __init__(
        self, backend: TorchBackend | OnnxBackend | CascadeBackend, max_seconds: float = MAX_SECONDS
    ) -> None:
        self.backend = backend
        self.labels: LabelSet = backend.labels
        self.sample_rate: int = backend.sample_rate
        self.ctc_characters: str | None = backend.ctc_characters
        # the model's own limit (Whisper's 30 s) where it is lower
        self.max_seconds = min(max_seconds, backend.max_seconds or max_seconds)
        self.rejection: Rejection | None = getattr(backend, "rejection", None)  # pipeline.serving.rejection
        self.trim_silence: bool = getattr(backend, "trim_silence", False)  # as the model was trained
        self._decoders = CommandDecoders(self.labels)  # joint decoding with slot heads

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str = "cpu", max_seconds: float = MAX_SECONDS
    ) -> IntentRecognizer:
        """A student model dir (PyTorch), an exported ``.onnx`` file (onnxruntime) or a cascade dir.

        Raises:
            InferenceError: the model cannot be loaded; the message names the file and why.
        """
        from pipeline.cascade.model import is_cascade_dir

        path = Path(path)
        if path.suffix == ".onnx":
            backend: TorchBackend | OnnxBackend | CascadeBackend = OnnxBackend(path, device)
        elif is_cascade_dir(path):
            backend = CascadeBackend(path, device)
        else:
            backend = TorchBackend(path, device)
        logger.info("loaded %s (%d intents, %s)", path, len(backend.labels), type(backend).__name__)
        return cls(backend, max_seconds)

    # -- inputs ------------------------------------------------------------------------------

    def load(
        self, item: AudioInput, sample_rate: int | None = None, name: str | None = None
    ) -> tuple[np.ndarray, str]:
        """One input as a mono float32 waveform at the model's rate, and a name for messages.

        Raises:
            AudioError: missing, undecodable, empty, too long, or non-finite audio.
        """
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            info = audio_info(path)  # header only: refuse long files before decoding them
            if info.duration > self.max_seconds:
                raise AudioError(
                    f"{path}: audio is {info.duration:.1f} s, longer than the {self.max_seconds:g} s limit"
                )
            samples, _ = read_audio(path, self.sample_rate)
            return samples, str(path)
        name = name or "array"
        if sample_rate is None:
            raise AudioError(f"{name}: an array input needs its sample_rate")
        samples = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        samples = samples.astype(np.float32, copy=False)
        if samples.ndim == 2:  # [channels, samples]
            samples = to_mono(samples)
        if samples.ndim != 1:
            raise AudioError(f"{name}: expected [samples] or [channels, samples], got shape {samples.shape}")
        if samples.size == 0:
            raise AudioError(f"{name}: audio is empty (0 samples)")
        if samples.size / sample_rate > self.max_seconds:
            raise AudioError(
                f"{name}: audio is {samples.size / sample_rate:.1f} s, longer than the {self.max_seconds:g} s limit"
            )
        if not np.isfinite(samples).all():
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        if sample_rate != self.sample_rate:
            samples = resample(samples, sample_rate, self.sample_rate)
        return np.ascontiguousarray(samples, dtype=np.float32), name

    # -- model -------------------------------------------------------------------------------

    def logits(self, waveforms: np.ndarray | torch.Tensor, lengths: np.ndarray | torch.Tensor) -> np.ndarray:
        """Intent logits ``[batch, intents]`` of a zero-padded batch at the model's sample rate."""
        return self.forward(waveforms, lengths).logits

    def forward(
        self, waveforms: np.ndarray | torch.Tensor, lengths: np.ndarray | torch.Tensor
    ) -> ModelOutput:
        """Logits (and CTC outputs) of a zero-padded ``[batch, samples]`` batch with ``[batch]`` lengths."""
        waveforms = _numpy(waveforms, np.float32)
        lengths = _numpy(lengths, np.int64)
        if waveforms.ndim != 2 or lengths.shape != waveforms.shape[:1]:
            raise ValueError(f"expected waveforms [batch, samples] and lengths [batch], got "
                             f"{waveforms.shape} and {lengths.shape}")  # fmt: skip
        return self.backend(waveforms, lengths)

    def predict(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        sample_rate: int | None = None,
        top_k: int = 5,
        threshold: float | str | None = "auto",
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Predict the intent of each input (file paths, or arrays at ``sample_rate``).

        Args:
            inputs: one input or a list: wav/flac/ogg/mp3 paths (any rate, stereo is mixed down),
                numpy/torch arrays ``[samples]`` or ``[channels, samples]``.
            sample_rate: the rate of array inputs.
            top_k: how many (intent, probability) pairs each result lists.
            threshold: ``"auto"``: the model's calibrated rejection (none stored: no rejection);
                a number: below it the rejection score (max-softmax unless calibrated with another
                method) answers ``"unknown"`` (no slots, a ``reason``); None: no rejection.
            batch_size: inputs per forward pass (batches are sorted by length).

        Raises:
            AudioError: the first input that cannot be used (missing, corrupt, empty, too long).
        """
        if isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor)):
            inputs = [inputs]
        waveforms, names = [], []
        for index, item in enumerate(inputs):
            waveform, name = self.load(item, sample_rate, name=f"array[{index}]")
            waveforms.append(waveform)
            names.append(name)
        return self._predict_waveforms(waveforms, names, top_k, threshold, batch_size)

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike],
        top_k: int = 5,
        threshold: float | str | None = "auto",
        batch_size: int = 16,
    ) -> Iterator[tuple[str, Prediction | AudioError]]:
        """Predict files one chunk at a time, in input order; a bad file yields its error, not a crash."""
        chunk: list[str] = []
        for path in paths:
            chunk.append(str(path))
            if len(chunk) >= 4 * batch_size:
                yield from self._predict_chunk(chunk, top_k, threshold, batch_size)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, top_k, threshold, batch_size)

    def predict_segments(self, path: str | os.PathLike, top_k: int = 5, threshold: float | str | None = "auto",
                         batch_size: int = 16) -> list[Prediction]:  # fmt: skip
        """One prediction (with ``start``/``end``) per speech segment of a recording of any length
        (:mod:`pipeline.serving.segments`); without speech, one ``no speech`` answer for all of it."""
        waveform, spans = segment_recording(path, self.sample_rate, self.max_seconds, self.rejection)
        names = [f"{path}@{start:g}-{end:g}" for start, end in spans]
        pieces = cut(waveform, self.sample_rate, spans)
        predictions = self._predict_waveforms(pieces, names, top_k, threshold, batch_size)
        for prediction, (start, end) in zip(predictions, spans, strict=True):
            prediction.start, prediction.end = start, end
        seconds = len(waveform) / self.sample_rate
        silent = Prediction(UNKNOWN_INTENT, 0.0, [], {}, seconds, source=str(path), reason=NO_SPEECH)
        return predictions or [dataclasses.replace(silent, start=0.0, end=round(seconds, 4))]

    def _predict_chunk(self, paths: list[str], top_k: int, threshold: float | str | None,
                       batch_size: int) -> Iterator[tuple[str, Prediction | AudioError]]:  # fmt: skip
        results: dict[int, Prediction | AudioError] = {}
        waveforms, names, positions = [], [], []
        for position, path in enumerate(paths):
            try:
                waveform, name = self.load(path)
            except AudioError as error:
                results[position] = error
                continue
            waveforms.append(waveform)
            names.append(name)
            positions.append(position)
        predictions = self._predict_waveforms(waveforms, names, top_k, threshold, batch_size)
        results.update(zip(positions, predictions, strict=True))
        for position, path in enumerate(paths):
            yield path, results[position]

    def _predict_waveforms(self, waveforms: list[np.ndarray], names: list[str], top_k: int,
                           threshold: float | str | None, batch_size: int) -> list[Prediction]:  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rejection = resolve_rejection(self.rejection, threshold, self.labels)
        vad = rejection.vad_config if rejection else None
        screened = [screen(waveform, self.sample_rate, self.trim_silence, vad) for waveform in waveforms]
        results: list[Prediction | None] = [
            None if found else Prediction(UNKNOWN_INTENT, 0.0, [], {}, len(waveforms[i]) / self.sample_rate,
                                          source=names[i], reason=NO_SPEECH)
            for i, (_, found) in enumerate(screened)
        ]  # fmt: skip
        speech = [index for index, result in enumerate(results) if result is None]  # the model runs on these
        max_samples = int(MAX_BATCH_SECONDS * self.sample_rate)
        for members in batches_by_duration([len(screened[i][0]) for i in speech], max_samples, batch_size):
            batch, lengths = pad_waveforms([screened[speech[m]][0] for m in members])
            output = self.forward(batch, lengths)
            for row, index in enumerate(speech[m] for m in members):
                results[index] = self._prediction(
                    output, row, len(waveforms[index]), names[index], top_k, rejection
                )
        return [result for result in results if result is not None]

    def _prediction(self, output: ModelOutput, row: int, samples: int, name: str, top_k: int,
                    rejection: Rejection | None) -> Prediction:  # fmt: skip
        logits = output.logits[row].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        ranked = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
        best = int(ranked[0])
        confidence = float(probabilities[best])
        intent = self.labels.intent(best)
        command = self._decoders.row(output.logits, output.slot_logits, row)
        if command is not None:  # slot heads: the intent and the slots decoded together
            confidence, intent = float(probabilities[command.intent]), self.labels.intent(command.intent)
        reason = no_command_reason(intent, self.labels)  # the (jointly decoded) unknown class won
        if reason is None and rejection is not None:
            reason = rejection.reason(logits, self.labels, command)
        intent = UNKNOWN_INTENT if reason else intent
        transcript = None if output.transcripts is None else output.transcripts[row]
        if self.ctc_characters and output.ctc_log_probs is not None:
            frames = int(output.ctc_lengths[row]) if output.ctc_lengths is not None else None
            transcript = greedy_ctc(output.ctc_log_probs[row][:frames], self.ctc_characters)
        return Prediction(
            intent=intent,
            confidence=confidence,
            top_k=[(self.labels.intent(int(i)), float(probabilities[i])) for i in ranked[:top_k]],
            slots=intent_slots(intent, self.labels) if command is None else command.filled_slots(intent),
            duration=samples / self.sample_rate,
            transcript=transcript,
            source=name,
            reason=reason,
            slot_confidence=command.slot_confidence if command is not None else {},
            command_confidence=command.confidence if command is not None else None,
        )


def intent_slots(intent: str, labels: LabelSet) -> dict[str, str]:
    """Slot values of an intent label (:func:`pipeline.data.labels.intent_slot_values`); ``{}`` where the
    label space has no slots, the intent is unknown or its name does not split into known values."""
    return intent_slot_values(labels, intent) if intent in labels else {}


def _numpy(value: np.ndarray | torch.Tensor, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


__all__ = [
    "MAX_SECONDS",
    "CascadeBackend",
    "UNKNOWN_INTENT",
    "InferenceError",
    "IntentRecognizer",
    "ModelOutput",
    "Prediction",
    "expand_inputs",
    "find_audio_files",
    "greedy_ctc",
    "intent_slots",
    "pad_waveforms",
]
