"""The report's open-set section: how well each model says "unknown".

Read from the models' open-set eval files (``eval/<ood split>.json``, ``slukd-open-set``:
:mod:`pipeline.evaluation.open_set`): per model (students, the teacher on the transcripts,
cascades), out-of-domain split and score, the AUROC, the false-positive rate at 95% in-domain
true-positive rate, and at the model's threshold the in-domain false rejections and the share of
each out-of-domain kind rejected. The model's own score (``method``) is listed first and marked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from pipeline.evaluation.open_set import OPEN_SET_FORMAT

EVAL_FOLDER = "eval"


def find_open_set(models: Iterable[tuple[str, Path]]) -> list[tuple[str, dict]]:
    """(model name, open-set eval) for every open-set eval file of the named model dirs."""
    found = []
    for name, folder in models:
        for path in sorted((Path(folder) / EVAL_FOLDER).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("format") == OPEN_SET_FORMAT:
                found.append((name, data))
    return found


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def open_set_rows(evaluations: list[tuple[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows (one per model, split and score; the model's own score first)."""
    kinds = sorted(
        {kind for _, e in evaluations for m in e["metrics"].values() for kind in m["rejected_by_kind"]}
    )
    header = ["model", "kind", "split", "score", "AUROC", "FPR@95%TPR", "threshold", "in-domain false rejections",
              "rejected (all)"] + [f"rejected: {kind}" for kind in kinds]  # fmt: skip
    rows = []
    for name, evaluation in evaluations:
        own = evaluation["method"]
        for method in sorted(evaluation["metrics"], key=lambda m: m != own):
            metrics, threshold = evaluation["metrics"][method], evaluation["threshold"][method]
            rows.append([
                name, evaluation["model"]["kind"], evaluation["split"], method + (" (model's)" if method == own else ""),
                _ratio(metrics["auroc"]), _percent(metrics["fpr_at_95_tpr"]),
                f"{threshold['value']:.4g} ({threshold['from']})", _percent(metrics["in_domain_false_rejections"]),
                _percent(metrics["out_of_domain_rejected"]),
            ] + [_percent(metrics["rejected_by_kind"].get(kind)) for kind in kinds])  # fmt: skip
    return header, rows


def section(models: Iterable[tuple[str, Path]]) -> tuple[list[tuple[str, object]], dict | None]:
    """The section's blocks (``("h2", text)``, ``("p", text)``, ``("rows", (header, rows))``) and its
    numbers for ``metrics.json``; no blocks and ``None`` when no model has an open-set eval file."""
    evaluations = find_open_set(models)
    if not evaluations:
        return [], None
    in_domain = sorted({s for _, e in evaluations for s in e["data"]["in_domain_splits"]})
    blocks: list[tuple[str, object]] = [
        ("h2", "Open set: rejecting what is not a command"),
        ("rows", open_set_rows(evaluations)),
        ("p", f"In-domain: the {', '.join(in_domain)} split(s); out-of-domain: the split named, intent 'unknown' "
              "(held-out kinds in ood_test). AUROC: the chance that a command scores above a non-command; "
              "FPR@95%TPR: non-commands accepted at the threshold that keeps 95% of the commands; at the threshold "
              "shown (the model's own, else the one keeping 98% of the in-domain valid split): commands rejected, "
              "and non-commands rejected, overall and per kind. The teacher reads the transcripts (non-speech: "
              "the marker 'no speech')."),
    ]  # fmt: skip
    numbers = {
        f"{name}/{evaluation['split']}": {"method": evaluation["method"], "metrics": evaluation["metrics"],
                                           "threshold": evaluation["threshold"]}
        for name, evaluation in evaluations
    }  # fmt: skip
    return blocks, numbers
