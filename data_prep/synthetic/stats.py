"""``stats.json`` of the built-in corpus: utterances, hours, speakers, phrasings and engines per split."""

from __future__ import annotations

from collections import Counter

from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest


def corpus_stats(manifests: dict[str, Manifest], labels: LabelSet, generation: dict | None = None) -> dict:
    """Utterances, hours, speakers, phrasings and expression shapes per split and per intent."""
    stats: dict = {"splits": {}}
    for split, manifest in manifests.items():
        per_intent: dict[str, dict] = {}
        for intent in labels.intents:
            texts = [u.transcript for u in manifest if u.intent == intent]
            per_intent[intent] = {"utterances": len(texts), "phrasings": len(set(texts))}
        stats["splits"][split] = {
            "utterances": len(manifest),
            "hours": round(manifest.total_duration / 3600, 4),
            "speakers": len({u.speaker for u in manifest}),
            "phrasings": len({u.transcript for u in manifest}),
            "shapes": len({u.extra["shape"] for u in manifest}),
            "intents": sum(1 for v in per_intent.values() if v["utterances"]),
            "engines": dict(Counter(u.extra["engine"] for u in manifest)),
            "phrasings_seen_in_training": dict(Counter(u.extra.get("phrasing", "seen") for u in manifest)),
            "per_intent": per_intent,
        }
    all_utterances = [u for m in manifests.values() for u in m]
    stats["total"] = {
        "utterances": len(all_utterances),
        "hours": round(sum(u.duration for u in all_utterances) / 3600, 4),
        "speakers": len({u.speaker for u in all_utterances}),
        "phrasings": len({u.transcript for u in all_utterances}),
    }
    if generation:
        stats["generation"] = generation
    return stats
