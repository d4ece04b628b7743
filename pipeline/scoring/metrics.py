"""Classification and transcription metrics: plain functions, numpy in, numbers out.

Used by the evaluation (:mod:`pipeline.evaluation.evaluate`) and by teacher fine-tuning
(:mod:`pipeline.teacher.train`). Definitions:

- macro-F1 averages the per-intent F1 over the intents that occur in the gold labels or the
  predictions (an intent absent from both says nothing about the model); with ``weights`` every
  item counts that many times (the teacher scores unique transcripts weighted by utterances);
- ECE: predictions are put into 15 equal-width confidence bins over [0, 1] (bin ``b`` holds
  confidences in ``(b/15, (b+1)/15]``, the first also 0), and ECE is the sum over bins of
  ``|accuracy - mean confidence|`` weighted by the fraction of predictions in the bin;
- per-slot accuracy: the fraction of utterances whose predicted intent has the gold value of
  that slot (slots are read off the intent name, ``action_object_location`` for FSC-style maps);
- command acceptance: the fraction of utterances whose intent and every slot are exact (the
  headline metric where the labels have slots; a slot the utterance leaves empty must be
  predicted ``none``);
- per-slot scores (:func:`slot_scores`): accuracy over every utterance (``none`` included), and
  F1 over filled values: a predicted value other than ``none`` is a true positive when it equals
  the gold value, precision divides by the predicted filled values, recall by the gold filled
  ones; ``micro`` pools every slot's counts;
- WER and CER: corpus-level (jiwer), utterances with an empty reference left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.labels import LabelSet, intent_slot_table

ECE_BINS = 15


def accuracy(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Fraction of equal entries (each counted ``weights[i]`` times when given)."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    if not len(gold):
        return 0.0
    if weights is None:
        return float((gold == predicted).mean())
    weights = np.asarray(weights, dtype=np.float64)
    return float(weights[gold == predicted].sum() / weights.sum())


def confusion_matrix(
    gold: np.ndarray, predicted: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """``[C, C]`` counts, rows gold, columns predicted (int64; float64 sums of ``weights`` when given)."""
    index = (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64))
    if weights is None:
        matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(matrix, index, 1)
    else:
        matrix = np.zeros((num_classes, num_classes), dtype=np.float64)
        np.add.at(matrix, index, np.asarray(weights, dtype=np.float64))
    return matrix


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class of a confusion matrix (0 where undefined)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = predicted + support
    f1 = np.divide(2 * true_positive, total, out=np.zeros_like(true_positive), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def macro_f1(
    gold: np.ndarray, predicted: np.ndarray, num_classes: int | None = None, weights: np.ndarray | None = None
) -> float:
    """Mean F1 over the classes present in ``gold`` or ``predicted`` (optionally weighted items)."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if not len(gold):
        return 0.0
    size = num_classes or int(max(gold.max(), predicted.max())) + 1
    confusion = confusion_matrix(gold, predicted, size, weights)
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return float(per_class_scores(confusion)["f1"][present].mean())


def expected_calibration_error(probabilities: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width confidence bins (see the module docstring).

    Args:
        probabilities: ``[N, C]`` class probabilities (rows sum to 1).
        gold: ``[N]`` gold class ids.
        bins: number of bins over [0, 1].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(gold)).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of positions where two prediction arrays agree."""
    return accuracy(first, second)


def slot_accuracy(
    gold: np.ndarray, predicted: np.ndarray, slot_table: list[dict[str, str]]
) -> dict[str, float]:
    """Per slot, the fraction of utterances whose predicted intent carries the gold slot value."""
    if not len(gold):
        return {name: 0.0 for name in slot_table[0]}
    return {
        name: float(
            np.mean(
                [slot_table[g][name] == slot_table[p][name] for g, p in zip(gold, predicted, strict=True)]
            )
        )
        for name in slot_table[0]
    }


def command_acceptance(gold_intents: np.ndarray, predicted_intents: np.ndarray,
                       gold_slots: dict[str, Sequence[str]], predicted_slots: dict[str, Sequence[str]]) -> float:  # fmt: skip
    """Fraction of utterances whose intent and every slot (the gold map's slots) are exact."""
    correct = command_exact(gold_intents, predicted_intents, gold_slots, predicted_slots)
    return float(correct.mean()) if len(correct) else 0.0


def command_exact(gold_intents: np.ndarray, predicted_intents: np.ndarray,
                  gold_slots: dict[str, Sequence[str]], predicted_slots: dict[str, Sequence[str]]) -> np.ndarray:  # fmt: skip
    """Per utterance, whether its intent and every slot (the gold map's slots) are exact."""
    correct = np.asarray(gold_intents) == np.asarray(predicted_intents)
    for name, gold in gold_slots.items():
        correct &= np.asarray(gold, dtype=object) == np.asarray(predicted_slots[name], dtype=object)
    return correct


def slot_scores(gold_slots: dict[str, Sequence[str]], predicted_slots: dict[str, Sequence[str]],
                empty: str = "none") -> dict[str, dict[str, float]]:  # fmt: skip
    """Per slot: accuracy, precision, recall and F1 over filled values (see the module docstring),
    and ``micro``: every slot's counts pooled."""
    result: dict[str, dict[str, float]] = {}
    pooled = np.zeros(4)  # right, gold filled, predicted filled, true positives
    for name, gold in gold_slots.items():
        gold = np.asarray(gold, dtype=object)
        predicted = np.asarray(predicted_slots[name], dtype=object)
        counts = np.array([
            (gold == predicted).sum(), (gold != empty).sum(), (predicted != empty).sum(),
            ((gold == predicted) & (predicted != empty)).sum(),
        ], dtype=np.float64)  # fmt: skip
        result[name] = _f1_scores(counts, len(gold))
        pooled += counts
    result["micro"] = _f1_scores(pooled, sum(len(gold) for gold in gold_slots.values()))
    return result


def _f1_scores(counts: np.ndarray, items: int) -> dict[str, float]:
    right, gold_filled, predicted_filled, true_positive = counts
    precision = true_positive / predicted_filled if predicted_filled else 0.0
    recall = true_positive / gold_filled if gold_filled else 0.0
    f1 = 2 * true_positive / (gold_filled + predicted_filled) if gold_filled + predicted_filled else 0.0
    return {"accuracy": float(right / items) if items else 0.0, "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}  # fmt: skip


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer); utterances with an empty reference are left out."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities of ``[N, C]`` logits (float64, numerically stable)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def classification_report(
    gold: np.ndarray, logits: np.ndarray, labels: LabelSet, predicted: np.ndarray | None = None
) -> dict:
    """Every clean-split metric of one set of logits (accuracy, macro-F1, ECE, per intent, ...);
    ``predicted``: the intents the model answers, when they are not the logits' argmax (slot heads
    decoded jointly, :func:`pipeline.evaluation.command_scores.decoded_intents`)."""
    gold = np.asarray(gold, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    log_probabilities = log_softmax(logits)
    probabilities = np.exp(log_probabilities)
    predicted = logits.argmax(axis=1) if predicted is None else np.asarray(predicted, dtype=np.int64)
    confusion = confusion_matrix(gold, predicted, len(labels))
    scores = per_class_scores(confusion)
    table = intent_slot_table(labels)
    return {
        "utterances": int(len(gold)),
        "accuracy": accuracy(gold, predicted),
        "macro_f1": macro_f1(gold, predicted, len(labels)),
        "ece": expected_calibration_error(probabilities, gold, ECE_BINS),
        "ece_bins": ECE_BINS,
        "nll": float(-log_probabilities[np.arange(len(gold)), gold].mean()) if len(gold) else 0.0,
        "slot_accuracy": slot_accuracy(gold, predicted, table) if table else None,
        "per_intent": {
            intent: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, intent in enumerate(labels.intents)
        },
        "confusion": {"labels": list(labels.intents), "matrix": confusion.tolist()},
    }
