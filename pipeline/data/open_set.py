"""Open-set labels: the ``unknown`` intent that out-of-domain utterances carry.

Out-of-domain manifests (``python -m data_prep.ood``) label every utterance ``unknown``. A model
trained with outlier exposure has ``unknown`` as one more intent in its ``labels.json`` (the
label-set flag: :func:`has_unknown`); a model without it still gets rejection scores from its
logits (max-softmax, energy; :mod:`pipeline.scoring.open_set`).

Non-speech rows (silence, noise, hum, clicks, babble) have no words; the manifest contract wants
a non-empty transcript, so they carry :data:`NO_SPEECH_TRANSCRIPT`, a fixed marker that the
teacher learns to call ``unknown`` like any other out-of-domain text. Distillation then teaches
the student, for non-speech audio, what the teacher says about that marker: ``unknown``.
"""

from __future__ import annotations

from pipeline.data.labels import UNKNOWN_INTENT, LabelError, LabelSet

NO_SPEECH_TRANSCRIPT = "no speech"
OOD_KINDS = ("other_domain", "generic", "near_miss", "non_speech")
OOD_SPLITS = ("ood_train", "ood_valid", "ood_test")


def has_unknown(labels: LabelSet) -> bool:
    """Whether the label map has the ``unknown`` intent (a model trained to reject)."""
    return UNKNOWN_INTENT in labels


def with_unknown(labels: LabelSet) -> LabelSet:
    """``labels`` with ``unknown`` appended as the last intent (ids of the others unchanged).

    Raises:
        LabelError: ``labels`` already has it.
    """
    if has_unknown(labels):
        raise LabelError(f"the label map already has the intent {UNKNOWN_INTENT!r}")
    return LabelSet(intents=[*labels.intents, UNKNOWN_INTENT], slots=labels.slots)


def unknown_index(labels: LabelSet) -> int | None:
    """The class id of ``unknown``, or ``None`` when the label map has none."""
    return labels.index(UNKNOWN_INTENT) if has_unknown(labels) else None
