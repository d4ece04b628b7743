"""The character CTC vocabulary, its training targets, and greedy decoding.

Id 0 is the blank; id ``i > 0`` is ``CHARACTERS[i - 1]``. Transcripts are normalised
(:func:`pipeline.data.text.normalize_transcript`) before they get here; characters outside the
vocabulary are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from pipeline.data.batching import pad_sequences

CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz0123456789"  # CTC vocabulary after the blank (id 0)


def vocab_size(characters: str = CHARACTERS) -> int:
    """Output classes of a CTC head over ``characters`` (the blank included)."""
    return len(characters) + 1


def ctc_targets(transcripts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
    """Character ids ``[batch, longest]`` (at least one column) and their lengths, on ``device``."""
    ids = [[CHARACTERS.index(c) + 1 for c in text if c in CHARACTERS] for text in transcripts]
    padded, lengths = pad_sequences([torch.tensor(i, dtype=torch.long) for i in ids], dtype=torch.long,
                                    min_length=1)  # fmt: skip
    return padded.to(device), lengths.to(device)


def frames_needed(transcript: str) -> int:
    """Encoder frames CTC needs for a transcript: one per character plus a blank between repeats."""
    characters = [c for c in transcript if c in CHARACTERS]
    return len(characters) + sum(a == b for a, b in zip(characters, characters[1:], strict=False))


def ctc_infeasible(encoder_frames: Sequence[int], transcripts: Sequence[str]) -> int:
    """How many utterances have fewer encoder frames than CTC needs for their characters; their
    CTC loss is infinite and zeroed, so they teach the CTC head nothing."""
    return sum(
        int(available) < frames_needed(text)
        for available, text in zip(encoder_frames, transcripts, strict=True)
    )


def ctc_greedy_decode(log_probs: np.ndarray, lengths: Sequence[int], characters: str) -> list[str]:
    """Best path per utterance: argmax per frame, repeats merged, blanks (id 0) dropped.

    Args:
        log_probs: ``[B, T, V]`` CTC log-probabilities; id ``i > 0`` is ``characters[i - 1]``.
        lengths: valid frames per utterance.
        characters: the vocabulary after the blank.
    """
    best = np.asarray(log_probs).argmax(axis=-1)
    texts = []
    for row, length in zip(best, lengths, strict=True):
        path = row[: int(length)]
        keep = path[(path != 0) & np.concatenate([[True], path[1:] != path[:-1]])]
        text = "".join(characters[i - 1] for i in keep if 0 < i <= len(characters))
        texts.append(" ".join(text.split()))
    return texts


def greedy_ctc(log_probs: np.ndarray, characters: str) -> str:
    """Best path through one utterance's ``[frames, vocab]`` CTC scores (blank id 0)."""
    return ctc_greedy_decode(log_probs[None], [len(log_probs)], characters)[0]
