"""Per-condition records of an eval file: the scores of one condition, every model's
per-utterance predictions, and a cascade's ASR section (WER/CER and the hypotheses).

``predictions`` (every model): ``ids`` and ``gold`` (intent indices into
``metrics.confusion.labels``) of the evaluated utterances in manifest order, and per condition
the predicted index of each (``null`` where the condition did not run on it, see
``EvaluateConfig.noisy_utterances``). The report scores two models on the same utterances from
these lists, so a student evaluated on the whole split is compared with a cascade evaluated on a
seeded subset on exactly that subset.

``asr`` (cascades): per condition the corpus WER and CER of the normalised hypotheses against the
normalised transcripts, and every hypothesis with its reference and the intent it led to.
:func:`reusable_hypotheses` reads them back from another cascade's eval file made with the same
ASR, manifest and noise, so a second cascade (another teacher behind the same ASR) classifies the
same hypotheses instead of transcribing the audio again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.core.io import read_json
from pipeline.data.labels import LabelSet, intent_slot_table
from pipeline.data.manifest import Manifest
from pipeline.data.text import normalize_transcript
from pipeline.scoring.metrics import accuracy, error_rates, macro_f1, slot_accuracy

logger = logging.getLogger(__name__)

# Settings that decide the noisy audio beyond the condition's name: a hypothesis is reusable only
# when they are equal.
NOISE_KEYS = ("seed", "babble_bank_size", "reverb_rt60_s")


def condition_scores(gold: np.ndarray, logits: np.ndarray, labels: LabelSet,
                     decoded: np.ndarray | None = None) -> tuple[np.ndarray, dict]:  # fmt: skip
    """The rows a condition ran on (not NaN), and their accuracy, macro-F1 and per-slot accuracy;
    ``decoded``: the intents the model answers where they are not the argmax (slot heads)."""
    ran = ~np.isnan(logits).any(axis=1)
    predicted = logits[ran].argmax(axis=1) if decoded is None else decoded[ran]
    table = intent_slot_table(labels)
    return ran, {
        "utterances": int(ran.sum()),
        "accuracy": accuracy(gold[ran], predicted),
        "macro_f1": macro_f1(gold[ran], predicted, len(labels)),
        "slot_accuracy": slot_accuracy(gold[ran], predicted, table) if table else None,
    }


def store_slot_logits(store: dict[str, np.ndarray], values: dict[str, np.ndarray], indices: list[int],
                       rows: int) -> None:  # fmt: skip
    """Write one batch's slot logits (slot -> [B, classes]) into the split's rows (NaN: not run)."""
    for name, batch_values in values.items():
        store.setdefault(name, np.full((rows, batch_values.shape[1]), np.nan, np.float32))[indices] = (
            batch_values
        )


def predictions_record(manifest: Manifest, gold: np.ndarray, logits: dict[str, np.ndarray],
                       decoded: dict[str, np.ndarray] | None = None,
                       commands: dict[str, list[int | None] | None] | None = None) -> dict:  # fmt: skip
    """``{"ids", "gold", "conditions": {name: [index or None]}}`` (see the module docstring);
    ``decoded``: per condition, the intents the model answers where they are not the argmax;
    ``commands``: per condition, 1/0 per utterance for an exact command (intent and every slot),
    stored as ``"commands"`` when the labels have slots."""
    conditions = {}
    for name, values in logits.items():
        ran = ~np.isnan(values).any(axis=1)
        best = values.argmax(axis=1) if len(values) else np.zeros(0, np.int64)
        if decoded is not None and name in decoded:
            best = decoded[name]
        conditions[name] = [int(b) if r else None for b, r in zip(best, ran, strict=True)]
    record = {"ids": [u.id for u in manifest], "gold": [int(g) for g in gold], "conditions": conditions}
    exact = {name: values for name, values in (commands or {}).items() if values is not None}
    if exact:
        record["commands"] = exact
    return record


def asr_record(manifest: Manifest, hypotheses: dict[str, list[str | None]], decoded: dict[str, np.ndarray],
               labels: LabelSet) -> tuple[dict, dict[str, dict]]:  # fmt: skip
    """A cascade's ``asr`` section (``conditions`` and ``hypotheses``) and per condition its
    ``{"wer", "cer"}`` for the noise sweep; ``decoded``: per condition, the intent index the model
    answers for each row (slot heads decoded jointly)."""
    references = [normalize_transcript(u.transcript) for u in manifest]
    rates, records = {}, {}
    for name, texts in hypotheses.items():
        rows = [i for i, text in enumerate(texts) if text is not None]
        rates[name] = error_rates([references[i] for i in rows], [texts[i] or "" for i in rows])
        records[name] = [
            {"id": manifest[i].id, "reference": references[i], "hypothesis": texts[i],
             "predicted": labels.intent(int(decoded[name][i]))}
            for i in rows
        ]  # fmt: skip
    conditions = [{"condition": name, "utterances": len(records[name]), **rates[name]} for name in hypotheses]
    return {"conditions": conditions, "hypotheses": records}, rates


def reusable_hypotheses(
    path: str | os.PathLike, fingerprint: dict, settings: dict
) -> dict[tuple[str, str], str]:
    """Hypotheses by (condition, utterance id) from another cascade's eval file, when it was made
    with the same ASR (identity and decoding), manifest and noise settings; else ``{}`` (logged)."""
    path = Path(path)
    try:
        other = read_json(path)
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("%s: hypotheses not reused (%s)", path, " ".join(str(error).split()))
        return {}
    problems = []
    theirs = other.get("fingerprint") or {}
    if theirs.get("manifest_sha256") != fingerprint["manifest_sha256"]:
        problems.append("another manifest")
    if ((theirs.get("kind") or {}).get("asr")) != (fingerprint.get("kind") or {}).get("asr"):
        problems.append("another ASR or decoding")
    other_settings = other.get("settings") or {}
    problems += [f"another {key}" for key in NOISE_KEYS if other_settings.get(key) != settings.get(key)]
    records = (other.get("asr") or {}).get("hypotheses")
    if not records:
        problems.append("no hypotheses in it")
    if problems:
        logger.warning("%s: hypotheses not reused: %s", path, ", ".join(problems))
        return {}
    known = {(name, row["id"]): row["hypothesis"] for name, rows in records.items() for row in rows}
    logger.info("%s: reusing %d ASR hypotheses", path, len(known))
    return known


def subset_note(subset: dict | None) -> str:
    """One line on the seeded subset an eval file was made on ("" for the whole split)."""
    if not subset:
        return ""
    return (f"a seeded subset (seed {subset['seed']}) of {subset['utterances']} of the {subset['split_utterances']} "
            f"utterances, {subset['noisy_utterances']} of them under each noisy condition")  # fmt: skip
