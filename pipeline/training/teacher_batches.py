"""The teacher's targets for one training batch: looked up per transcript, padded over tokens,
stacked per distilled layer (:class:`pipeline.training.losses.TeacherBatch`)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.training.losses import TeacherBatch


class TeacherLookup:
    """Collates the teacher's targets of a batch's transcripts (padded over tokens)."""

    def __init__(
        self, targets, layers: list[int]
    ) -> None:  # targets: pipeline.teacher.targets.TeacherTargets
        self.targets = targets
        self.rows = [targets.layers.index(layer) for layer in layers]

    def missing(self, transcripts: list[str]) -> list[str]:
        """The transcripts the targets have no entry for (sorted, distinct)."""
        return sorted({t for t in transcripts if t not in self.targets})

    def batch(self, transcripts: list[str], device: torch.device) -> TeacherBatch:
        entries = [self.targets.lookup(t) for t in transcripts]
        token_lengths = torch.tensor([len(e.token_ids) for e in entries])
        tokens = int(token_lengths.max())
        hidden = np.zeros((len(self.rows), len(entries), tokens, self.targets.hidden_size), np.float32)
        attention = np.zeros((len(self.rows), len(entries), tokens, tokens), np.float32)
        for row, entry in enumerate(entries):
            length = len(entry.token_ids)
            hidden[:, row, :length] = entry.hidden[self.rows]
            attention[:, row, :length, :length] = entry.attention[self.rows]
        logits = None
        if entries[0].logits is not None:
            logits = torch.from_numpy(np.stack([e.logits for e in entries]).astype(np.float32)).to(device)
        slot_logits = {
            name: torch.from_numpy(np.stack([e.slot_logits[name] for e in entries]).astype(np.float32)).to(
                device
            )
            for name in entries[0].slot_logits
        }
        sentence = torch.from_numpy(np.stack([e.sentence for e in entries]).astype(np.float32)).to(device)
        return TeacherBatch(
            logits=logits,
            sentence=sentence,
            hidden_states=[torch.from_numpy(h).to(device) for h in hidden],
            attentions=[torch.from_numpy(a).to(device) for a in attention],
            token_lengths=token_lengths.to(device),
            slot_logits=slot_logits,
        )
