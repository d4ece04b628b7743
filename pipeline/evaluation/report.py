"""The experiment report: ``slukd report EXP_DIR`` -> ``EXP_DIR/report/``.

Every model dir under the experiment folder with eval files (``teacher/eval/*.json``,
``student_*/eval/*.json``, any other ``<model>/eval/*.json`` up to three levels down) is
gathered into:

- ``report.md`` and a self-contained ``report.html`` (figures inlined as base64 PNG data URIs,
  styles inline, no external references);
- ``metrics.json``: the numbers the report shows, per model and split;
- figures: ``confusion_<model>.png`` per student and cascade, ``accuracy_vs_snr.png`` (one line
  per model and noise type; the teacher, which reads text, as a flat reference), ``per_intent_f1.png``
  (heat map, intents x models), ``training_curves.png`` (train loss and valid accuracy per epoch
  from each model's ``train_log.csv``).

A cascade (an ASR, then the teacher on its hypothesis: :mod:`pipeline.cascade.model`) is one more
row, line and confusion matrix, and gets an "end-to-end vs cascade" section against the best
student on the same utterances (:mod:`pipeline.evaluation.report_cascade`); when it was evaluated on a
seeded subset, the report says so.

Every number comes from the eval files and training logs; nothing is typed in. The folder is
built under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_directory, write_json
from pipeline.core.version import __version__
from pipeline.evaluation.evaluate import EVAL_FOLDER, EVAL_FORMAT
from pipeline.evaluation.open_set import OPEN_SET_FORMAT
from pipeline.evaluation.records import subset_note
from pipeline.evaluation.report_cascade import section as cascade_section
from pipeline.evaluation.report_figures import (
    ModelEvals,
    plot_accuracy_vs_snr,
    plot_confusion,
    plot_per_intent_f1,
    plot_training_curves,
    safe_name,
)
from pipeline.evaluation.report_open_set import section as open_set_section
from pipeline.evaluation.selection import best_on_valid, trained_on_held_out
from pipeline.scoring.intervals import proportion_estimate

logger = logging.getLogger(__name__)

REPORT_FOLDER = "report"
MAX_DEPTH = 3  # how deep under the experiment folder model dirs are looked for
TRAIN_LOG = "train_log.csv"


class ReportError(SlukdError, RuntimeError):
    """No report can be written (no eval files, a bad output folder)."""


# ---------------------------------------------------------------------------------------------
# Gathering


def find_models(experiment: str | os.PathLike, exclude: Path | None = None) -> list[ModelEvals]:
    """Model dirs with eval files under ``experiment`` (symlinks followed): teacher, students, cascades."""
    root = Path(experiment)
    if not root.is_dir():
        raise ReportError(f"{root}: experiment folder not found")
    models = []
    for current, folders, _ in os.walk(root, followlinks=True):
        here = Path(current)
        depth = len(here.relative_to(root).parts)
        if exclude is not None and here.resolve() == exclude.resolve():
            folders.clear()
            continue
        if depth >= MAX_DEPTH:
            folders.clear()
        folders[:] = sorted(
            f for f in folders if not f.startswith(".") and f not in ("checkpoints", "targets")
        )
        if EVAL_FOLDER not in folders or not (here / "config.json").is_file():
            continue
        folders.remove(EVAL_FOLDER)
        evals = {}
        for path in sorted((here / EVAL_FOLDER).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, OSError) as error:
                logger.warning("%s: skipped (%s)", path, error)
                continue
            if isinstance(data, dict) and data.get("format") == OPEN_SET_FORMAT:
                continue  # read by the open-set section
            if not isinstance(data, dict) or data.get("format") != EVAL_FORMAT:
                logger.warning("%s: skipped (not a slukd eval file)", path)
                continue
            evals[data.get("split", path.stem)] = data
        if evals:
            name = here.relative_to(root).as_posix() or here.name
            kind = next(iter(evals.values()))["model"]["kind"]
            models.append(ModelEvals(name, here, kind, evals))
    if not models:
        raise ReportError(f"{root}: no model dir with {EVAL_FOLDER}/*.json here (run `slukd evaluate` first)")
    return sorted(models, key=lambda m: (m.kind != "teacher", m.kind == "cascade", m.name))


def primary_split(models: list[ModelEvals]) -> str:
    """``test`` when some model was evaluated on it, else the split most models have."""
    splits = [split for model in models for split in model.evals]
    if "test" in splits:
        return "test"
    return max(sorted(set(splits)), key=splits.count)


def summarize(evaluation: dict) -> dict:
    """The report's numbers of one eval file."""
    metrics = evaluation["metrics"]
    speed = evaluation.get("speed") or {}
    cpu = speed.get("cpu") or {}
    gpu = speed.get("cuda") or {}
    ctc = evaluation.get("ctc") or {}
    asr_conditions = (evaluation.get("asr") or {}).get("conditions") or []
    asr_clean = next((row for row in asr_conditions if row["condition"] == "clean"), {})
    return {
        "utterances": metrics["utterances"],
        "accuracy": metrics["accuracy"],
        "accuracy_interval": list(proportion_estimate(metrics["accuracy"], metrics["utterances"])[1:3]),
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "nll": metrics.get("nll"),
        "teacher_agreement": metrics.get("teacher_agreement"),
        "slot_accuracy": metrics.get("slot_accuracy"),
        "command_acceptance": metrics.get("command_acceptance"),  # intent and every slot exact
        "slots": metrics.get("slots"),  # per slot: accuracy, precision, recall, F1
        "wer": ctc.get("wer", asr_clean.get("wer")),
        "cer": ctc.get("cer", asr_clean.get("cer")),
        "subset": (evaluation.get("data") or {}).get("subset"),
        "parameters": speed.get("parameters"),
        "weights_bytes": speed.get("weights_bytes"),
        "input": speed.get("input"),
        "latency_ms_cpu": cpu.get("latency_ms"),
        "real_time_factor_cpu": cpu.get("real_time_factor"),
        "throughput_cpu": cpu.get("throughput_utterances_per_second"),
        "latency_ms_gpu": gpu.get("latency_ms"),
        "throughput_gpu": gpu.get("throughput_utterances_per_second"),
        "noise_sweep": evaluation.get("noise_sweep"),
        "per_intent_f1": {intent: scores["f1"] for intent, scores in metrics["per_intent"].items()},
        "hardware": (evaluation.get("environment") or {}).get("hardware"),
        "date": (evaluation.get("environment") or {}).get("date"),
    }


def read_train_log(folder: Path) -> dict[str, list[float]] | None:
    """``epoch``, ``train_loss``, ``valid_accuracy`` columns of a model dir's ``train_log.csv``."""
    path = folder / TRAIN_LOG
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    columns: dict[str, list[float]] = {}
    for name in ("epoch", "train_loss", "valid_accuracy"):
        try:
            columns[name] = [float(row[name]) for row in rows]
        except (KeyError, TypeError, ValueError):
            logger.warning("%s: no usable %r column", path, name)
            return None
    return columns if rows else None


# ---------------------------------------------------------------------------------------------
# Tables and documents


def _accuracy(value: float | None, utterances: int | None, count: bool = False) -> str:
    """``97.3% [95.1, 98.6]``: an accuracy and its 95% Wilson interval (``count``: `` n=200`` after it)."""
    if value is None or not utterances:
        return _number(value, "percent")
    estimate = proportion_estimate(value, int(utterances))
    text = f"{100 * value:.1f}% [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"
    return text + (f" n={estimate.n}" if count else "")


def _number(value: Any, style: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if style == "percent":
        return f"{100 * value:.1f}%"
    if style == "ratio":
        return f"{value:.3f}"
    if style == "ms":
        return f"{value:.1f}"
    if style == "count":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"
    if style == "rate":
        return f"{value:.0f}"
    if style == "megabytes":
        return f"{value / 1e6:.1f}" if value >= 1e7 else f"{value / 1e6:.2f}"
    return str(value)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def main_table(models: list[ModelEvals]) -> Table:
    header = ["model", "kind", "split", "utterances", "accuracy [95% CI]", "macro-F1", "ECE", "agreement w/ teacher", "WER",
              "params", "size MB", "latency ms (CPU, 1 thread)", "RTF", "utt/s (CPU, batch 64)"]  # fmt: skip
    commands = any(summarize(e)["command_acceptance"] is not None for m in models for e in m.evals.values())
    if commands:  # labels with slots: command acceptance beside intent accuracy
        header.insert(5, "command acceptance [95% CI]")
    rows = []
    for model in models:
        for split, evaluation in model.evals.items():
            s = summarize(evaluation)
            rows.append([
                model.name, model.kind, split, str(s["utterances"]) + (" *" if s["subset"] else ""),
                _accuracy(s["accuracy"], s["utterances"]),
                *([_accuracy(s["command_acceptance"], s["utterances"])] if commands else []), _number(s["macro_f1"], "ratio"),
                _number(s["ece"], "ratio"), _number(s["teacher_agreement"], "percent"), _number(s["wer"], "percent"),
                _number(s["parameters"], "count"), _number(s["weights_bytes"], "megabytes"),
                _number(s["latency_ms_cpu"], "ms"), _number(s["real_time_factor_cpu"], "ratio"),
                _number(s["throughput_cpu"], "rate"),
            ])  # fmt: skip
    return Table(header, rows)


def noise_table(models: list[ModelEvals], split: str) -> Table | None:
    sweeps = {
        m.name: m.evals[split]["noise_sweep"]
        for m in models
        if split in m.evals and m.evals[split].get("noise_sweep")
    }
    if not sweeps:
        return None
    conditions = list(dict.fromkeys(row["condition"] for sweep in sweeps.values() for row in sweep))
    rows = []
    for name, sweep in sweeps.items():
        by_condition = {row["condition"]: row for row in sweep}
        rows.append([name] + [_accuracy((by_condition.get(c) or {}).get("accuracy"),
                                        (by_condition.get(c) or {}).get("utterances"), count=True)
                              for c in conditions])  # fmt: skip
    return Table(["model"] + conditions, rows)


def slot_table(models: list[ModelEvals], split: str) -> Table | None:
    """Per-slot accuracy and F1 (eval files' ``slots``), or per-slot accuracy read off the intents."""
    scored = {m.name: m.evals[split]["metrics"].get("slots") for m in models if split in m.evals}
    scored = {name: values for name, values in scored.items() if values}
    if scored:
        names = list(dict.fromkeys(slot for values in scored.values() for slot in values))
        header = ["model"] + [f"{slot} {what}" for slot in names for what in ("accuracy", "F1")]
        rows = [[model] + [_number((v.get(s) or {}).get(k), "percent") for s in names for k in ("accuracy", "f1")]
                for model, v in scored.items()]  # fmt: skip
        return Table(header, rows)
    slots = {m.name: m.evals[split]["metrics"].get("slot_accuracy") for m in models if split in m.evals}
    slots = {name: values for name, values in slots.items() if values}
    if not slots:
        return None
    names = list(dict.fromkeys(slot for values in slots.values() for slot in values))
    counts = {m.name: m.evals[split]["metrics"]["utterances"] for m in models if split in m.evals}
    return Table(
        ["model", "n"] + names,
        [
            [model, str(counts[model])] + [_accuracy(v.get(s), counts[model]) for s in names]
            for model, v in slots.items()
        ],
    )


def gpu_table(models: list[ModelEvals]) -> Table | None:
    rows = []
    for model in models:
        for split, evaluation in model.evals.items():
            s = summarize(evaluation)
            if s["latency_ms_gpu"] is not None:
                gpu = (s["hardware"] or {}).get("gpu") or "GPU"
                rows.append(
                    [
                        model.name,
                        split,
                        gpu,
                        _number(s["latency_ms_gpu"], "ms"),
                        _number(s["throughput_gpu"], "rate"),
                    ]
                )
    return (
        Table(["model", "split", "GPU", "latency ms (batch 1)", "utt/s (batch 64)"], rows) if rows else None
    )


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def _document(title: str, blocks: list[tuple[str, Any]], figures: dict[str, Path]) -> tuple[str, str]:
    """Render ``blocks`` (``("h2", text)``, ``("p", text)``, ``("table", Table)``, ``("figure", name)``)."""
    markdown = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for kind, content in blocks:
        if kind == "h2":
            markdown += [f"## {content}", ""]
            body.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            markdown += [content, ""]
            body.append(f"<p>{html.escape(content)}</p>")
        elif kind == "table":
            markdown += [content.markdown(), ""]
            body.append(content.html())
        elif kind == "figure":
            path = figures[content]
            markdown += [f"![{content}]({path.name})", ""]
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(content)}" src="data:image/png;base64,{encoded}"></p>')
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return "\n".join(markdown), page


def write_report(experiment: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Gather the eval files of an experiment folder into ``report.md``, ``report.html``,
    ``metrics.json`` and PNG figures.

    Args:
        experiment: the experiment folder (``teacher/``, ``student_*/``, ...).
        out: output folder (default ``experiment/report``); replaced as a whole when complete.

    Returns:
        The output folder.
    """
    experiment = Path(experiment)
    out = Path(out) if out is not None else experiment / REPORT_FOLDER
    if (
        out.exists()
        and experiment.exists()
        and (out.resolve() == experiment.resolve() or experiment.resolve().is_relative_to(out.resolve()))
    ):
        raise ReportError(f"{out}: the output folder must not be the experiment folder or hold it")
    if out.exists() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise ReportError(f"{out}: exists and is not a slukd report folder; choose another --out")
    models = find_models(experiment, exclude=out)
    split = primary_split(models)
    students = [m for m in models if m.kind == "student" and split in m.evals]
    chosen = best_on_valid(students)  # chosen on valid only; test numbers are reported, never chosen on
    best, best_valid = chosen if chosen is not None else (None, None)
    audio_models = [m for m in models if m.kind != "teacher" and split in m.evals]  # students and cascades
    cascades = [m for m in models if m.kind == "cascade"]
    logs = {m.name: log for m in models if (log := read_train_log(m.folder)) is not None}
    logger.info("report on %d model(s) of %s (main split %s): %s", len(models), experiment, split,
                ", ".join(m.name for m in models))  # fmt: skip

    with atomic_directory(out) as folder:
        figures: dict[str, Path] = {}
        for model in audio_models:
            name = f"confusion_{safe_name(model.name)}"
            plot_confusion(model.evals[split], f"{model.name} on {split}: confusion (rows normalised)",
                           folder / f"{name}.png")  # fmt: skip
            figures[name] = folder / f"{name}.png"
        plot_accuracy_vs_snr(models, split, folder / "accuracy_vs_snr.png")
        figures["accuracy_vs_snr"] = folder / "accuracy_vs_snr.png"
        plot_per_intent_f1(models, split, folder / "per_intent_f1.png")
        figures["per_intent_f1"] = folder / "per_intent_f1.png"
        if logs:
            plot_training_curves(logs, folder / "training_curves.png")
            figures["training_curves"] = folder / "training_curves.png"

        generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        blocks: list[tuple[str, Any]] = [
            ("p", f"Experiment {experiment} ({len(models)} model(s)); main split {split}; generated {generated} "
                  f"by slukd {__version__}. Every number is read from the models' eval/*.json files."),
            ("h2", "Main table"),
            ("table", main_table(models)),
            ("p", "Accuracy and macro-F1 on the clean split; ECE with 15 equal-width confidence bins; agreement: "
                  "fraction of utterances where the model's intent equals the teacher's on the transcript; WER of "
                  "the greedy CTC transcript (students) or of the ASR's hypotheses (cascades); size: the weights "
                  "(a cascade's ASR and teacher together); latency: median per utterance at batch 1 on one CPU "
                  "thread, features included (text in for the teacher, audio in and intent out for a cascade); "
                  "RTF: processing time over audio duration; a cascade decodes one utterance at a time, so it has "
                  "no batch throughput."),
        ]  # fmt: skip
        subsets = [f"{m.name} on {s}: {subset_note(e['data']['subset'])}" for m in models
                   for s, e in m.evals.items() if (e.get("data") or {}).get("subset")]  # fmt: skip
        if subsets:
            blocks.append(("p", "* evaluated on a seeded subset of the split (its other rows and figures too): "
                                + "; ".join(subsets) + "."))  # fmt: skip
        if best is not None:
            test = best.evals[split]["metrics"]
            blocks.append(("p", f"Best student, chosen on valid: {best.name} (valid {best_valid.describe()}; "
                                f"{split}, reported only: {_accuracy(test['accuracy'], test['utterances'], True)})."))  # fmt: skip
        elif students:
            blocks.append(("p", "No best student: none has a valid score (eval/valid.json or metrics.json), and "
                                "a choice on a test split would not be one."))  # fmt: skip
        taught = [m.name for m in students if trained_on_held_out(m)]
        if taught:
            held_out = [m.name for m in students if m.name not in taught]
            blocks.append(("p", f"Trained on every expression of the grammar (train + train_rest): {', '.join(taught)}; "
                                "their valid and test_unseen_phrasing are new texts of expressions they were taught. "
                                + (f"Phrasings never taught: {', '.join(held_out)} (train alone)." if held_out else "")))  # fmt: skip
        blocks.append(("p", "Accuracies carry their 95% Wilson interval in brackets; n: the utterances behind "
                            "each number."))  # fmt: skip
        noise = noise_table(models, split)
        blocks += [("h2", f"Accuracy under noise ({split})")]
        if noise is not None:
            blocks.append(("table", noise))
        blocks.append(("figure", "accuracy_vs_snr"))
        slots = slot_table(models, split)
        if slots is not None:
            blocks += [("h2", f"Per-slot accuracy ({split})"), ("table", slots)]
        comparison = None
        if best is not None and cascades:
            comparison_blocks, comparison = cascade_section(best, cascades, split)
            blocks += [("table", Table(*content)) if kind == "rows" else (kind, content)
                       for kind, content in comparison_blocks]  # fmt: skip
        open_set_blocks, open_set = open_set_section((m.name, m.folder) for m in models)
        blocks += [
            ("table", Table(*content)) if kind == "rows" else (kind, content)
            for kind, content in open_set_blocks
        ]
        gpu = gpu_table(models)
        if gpu is not None:
            blocks += [("h2", "GPU speed"), ("table", gpu)]
        blocks += [("h2", f"Per-intent F1 ({split})"), ("figure", "per_intent_f1")]
        if audio_models:
            blocks.append(("h2", f"Confusion matrices ({split})"))
            blocks += [("figure", f"confusion_{safe_name(m.name)}") for m in audio_models]
        if logs:
            blocks += [("h2", "Training curves"), ("figure", "training_curves")]
        markdown, page = _document(f"slukd report: {experiment.name}", blocks, figures)
        (folder / "report.md").write_text(markdown + "\n", encoding="utf-8")
        (folder / "report.html").write_text(page, encoding="utf-8")
        write_json(folder / "metrics.json", {
            "experiment": str(experiment),
            "generated": generated,
            "slukd_version": __version__,
            "main_split": split,
            "best_student": best.name if best is not None else None,
            "best_student_valid": best_valid._asdict() if best_valid is not None else None,
            "end_to_end_vs_cascade": comparison,
            "open_set": open_set,
            "models": {
                m.name: {"dir": str(m.folder), "kind": m.kind,
                         "eval_files": {s: str(m.folder / EVAL_FOLDER / f"{s}.json") for s in m.evals},
                         "splits": {s: summarize(e) for s, e in m.evals.items()},
                         "train_log": logs.get(m.name)}
                for m in models
            },
            "figures": sorted(path.name for path in figures.values()),
        })  # fmt: skip
    logger.info("report written to %s", out)
    return out
