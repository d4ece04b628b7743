"""Students that share a frozen bottom run it once per batch when evaluated in one process.

The recipe's Whisper students (CE only and distilled) keep Whisper tiny.en's encoder frozen and
train only what sits on it; ``slukd evaluate --model A,B`` evaluates both in one process, and
:data:`SHARED_FROZEN` keeps the frozen bottom's output of every batch the first student ran (keyed
by the frozen part's identity, :func:`pipeline.training.encoder_cache.cache_identity`, and the
batch's waveform bytes) for the next one, which runs only its trainable top
(``forward_from_frozen``). The second student's logits are bit-for-bit those of its own full
forward: the same batches (the batching depends on the split and the settings only), the same
frozen weights and front-end, the same tensors. Off unless the CLI enables it; emptied after
each split, so at most one split's states are held.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch
from torch import Tensor

from pipeline.serving.model_kinds import LoadedModel, WaveformOutput
from pipeline.training.encoder_cache import cache_identity, frozen_weights_sha256, has_frozen_part

Forward = Callable[[Tensor, Tensor], WaveformOutput]


def _batch_key(waveforms: Tensor, lengths: Tensor) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(str(tuple(waveforms.shape)).encode())
    digest.update(waveforms.detach().cpu().contiguous().numpy().tobytes())
    digest.update(lengths.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


class SharedFrozenStates:
    """Frozen-bottom outputs by (frozen identity, batch), handed from one student to the next."""

    def __init__(self) -> None:
        self.enabled = False
        self.states: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
        self.hits = 0

    def clear(self) -> None:
        self.states.clear()

    def forward_for(self, model: LoadedModel) -> Forward | None:
        """A forward that shares the frozen bottom, or ``None`` (off, not a student, nothing frozen)."""
        student, frontend = model.module, model.frontend
        if not self.enabled or model.kind != "student" or frontend is None or not has_frozen_part(student):
            return None
        identity = json.dumps(
            cache_identity(student, frontend, frozen_weights_sha256(student)), sort_keys=True
        )

        @torch.no_grad()
        def forward(waveforms: Tensor, lengths: Tensor) -> WaveformOutput:
            key = (identity, _batch_key(waveforms, lengths))
            if key in self.states:
                states, frames = self.states[key]
                self.hits += 1
            else:
                features, feature_lengths = frontend(waveforms, lengths)
                states, frames = student.encode_frozen(features, feature_lengths)
                self.states[key] = (states, frames)
            output = student.forward_from_frozen(states, frames)
            return WaveformOutput(
                output.logits, output.ctc_log_probs, output.lengths, slot_logits=output.slot_logits
            )

        return forward


SHARED_FROZEN = SharedFrozenStates()
