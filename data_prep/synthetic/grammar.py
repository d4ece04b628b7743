"""The phrase grammar of the built-in corpus, in the label space of Fluent Speech Commands.

Three slots (``action``, ``object``, ``location``) and FSC's 31 valid combinations. Intent
names follow the convention FSC recipes use (``f"{action}_{object}_{location}"``), so a model
trained here carries over to FSC unchanged.

Phrasings come from templates grouped in *families* (one sentence shape: "verb particle
object", ellipsis "kitchen lights off", a polite request, an indirect statement, ...). A whole
family can be held out of training for the unseen-phrasing test split.

Template syntax: ``(a|b)`` picks one alternative, ``[x]`` is optional, ``{name}`` is replaced
by the intent's lexicon entry of that name (which may itself use the syntax).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

ACTIONS = ("activate", "deactivate", "increase", "decrease", "change language", "bring")
OBJECTS = (
    "none", "music", "lights", "volume", "heat", "lamp", "newspaper", "juice", "socks", "shoes",
    "Chinese", "Korean", "English", "German",
)  # fmt: skip
LOCATIONS = ("none", "kitchen", "bedroom", "washroom")
SLOT_VALUES = {"action": list(ACTIONS), "object": list(OBJECTS), "location": list(LOCATIONS)}


@dataclass(frozen=True)
class Intent:
    action: str
    object: str
    location: str

    @property
    def name(self) -> str:
        return f"{self.action}_{self.object}_{self.location}"

    @property
    def slots(self) -> dict[str, str]:
        return {"action": self.action, "object": self.object, "location": self.location}

    @property
    def group(self) -> str:
        """Which template group phrases this intent."""
        if self.action in ("activate", "deactivate"):
            return "switch"
        if self.action in ("increase", "decrease"):
            return "level"
        return "bring" if self.action == "bring" else "language"


def _fsc_intents() -> tuple[Intent, ...]:
    intents = [
        Intent("change language", language, "none")
        for language in ("none", "Chinese", "Korean", "English", "German")
    ]
    for action in ("activate", "deactivate"):
        intents += [Intent(action, "music", "none"), Intent(action, "lamp", "none")]
        intents += [Intent(action, "lights", location) for location in LOCATIONS]
    for action in ("increase", "decrease"):
        intents.append(Intent(action, "volume", "none"))
        intents += [Intent(action, "heat", location) for location in LOCATIONS]
    intents += [Intent("bring", item, "none") for item in ("newspaper", "juice", "socks", "shoes")]
    return tuple(intents)


INTENTS: tuple[Intent, ...] = _fsc_intents()
assert len(INTENTS) == 31

# ---------------------------------------------------------------------------------------------
# Lexicon: per-intent fillers for the template slots.

_THING = {
    "lights": "(lights|light)",
    "lamp": "lamp",
    "music": "music",
    "volume": "(volume|sound)",
    "heat": "(heat|heating|temperature)",
}
_LOCATION = {"kitchen": "kitchen", "bedroom": "bedroom", "washroom": "(washroom|bathroom)"}
_ITEM = {"newspaper": "(newspaper|paper)", "juice": "juice", "socks": "socks", "shoes": "shoes"}
_ITEM_DETERMINER = {
    "newspaper": "(the|my|today's)",
    "juice": "(some|the|a glass of)",
    "socks": "(my|some|a pair of)",
    "shoes": "(my|the)",
}
_LANGUAGE = {"Chinese": "chinese", "Korean": "korean", "English": "english", "German": "german"}


def lexicon(intent: Intent) -> dict[str, str]:
    """Template fillers for one intent."""
    entries: dict[str, str] = {}
    located = intent.location != "none"
    if intent.group in ("switch", "level"):
        thing = _THING[intent.object]
        entries["thing"] = thing
        if located:
            place = _LOCATION[intent.location]
            entries["np"] = f"(the {place} {thing}|the {thing} in the {place})"
            entries["bare"] = f"({place} {thing}|{thing} in the {place})"
            entries["where"] = f" in the {place}"
        else:
            entries["np"] = f"the {thing}"
            entries["bare"] = thing
            entries["where"] = "[ in here]" if intent.object in ("heat", "lights") else ""
    if intent.group == "switch":
        on = intent.action == "activate"
        entries["particle"] = "on" if on else "off"
        entries["verb"] = "(turn|switch)" if on else "(turn|switch|shut)"
        entries["direct"] = "(activate|enable|start)" if on else "(deactivate|disable|stop)"
        entries["want"] = "on" if on else "off"
        if intent.object == "lights":
            entries["indirect"] = "(it is|it's) too dark{where}" if on else "(it is|it's) too bright{where}"
        elif intent.object == "music":
            entries["indirect"] = (
                "(play some music|i want to hear some music)"
                if on
                else "(stop the music|pause the music|no more music)"
            )
        else:
            entries["indirect"] = "i need the lamp (on|now)" if on else "i do not need the lamp (on|now)"
    elif intent.group == "level":
        up = intent.action == "increase"
        entries["particle"] = "up" if up else "down"
        entries["more"] = "(increase|raise)" if up else "(decrease|lower|reduce)"
        entries["amount"] = "more" if up else "less"
        entries["level"] = "higher" if up else "lower"
        if intent.object == "volume":
            entries["indirect"] = (
                "(louder|make it louder|i can't hear that)"
                if up
                else "(quieter|make it quieter|that's too loud)"
            )
        else:
            entries["indirect"] = (
                "((it is|it's) too cold{where}|make it warmer{where})"
                if up
                else "((it is|it's) too hot{where}|make it cooler{where})"
            )
    elif intent.group == "bring":
        entries["item"] = f"{_ITEM_DETERMINER[intent.object]} {_ITEM[intent.object]}"
        entries["bare"] = _ITEM[intent.object]
    else:
        if intent.object == "none":
            entries["target"] = ""  # "use"/"ellipsis" need a language: no entry, no phrasing
        else:
            entries["target"] = f" to {_LANGUAGE[intent.object]}"
            entries["language"] = _LANGUAGE[intent.object]
    return entries


# ---------------------------------------------------------------------------------------------
# Templates: family name -> template, per group. Families are the unit held out.

TEMPLATES: dict[str, dict[str, str]] = {
    "switch": {
        "verb-particle-object": "{verb} {particle} {np}",
        "verb-object-particle": "{verb} {np} {particle}",
        "ellipsis": "{bare} {particle}",
        "polite-request": "(could|can|would) you [please] {verb} {particle} {np}",
        "please-command": "(please {verb} {particle} {np}|{verb} {particle} {np} please)",
        "direct-verb": "{direct} {np}",
        "want": "i (want|would like) {np} {want}",
        "carrier": "(okay|alright) (now|then) {verb} {np} {particle}",
        "indirect": "{indirect}",
    },
    "level": {
        "verb-particle-object": "turn {particle} {np}",
        "verb-object-particle": "turn {np} {particle}",
        "ellipsis": "{bare} {particle}",
        "polite-request": "(could|can|would) you [please] turn {np} {particle}",
        "direct-verb": "{more} {np}",
        "please-command": "(please {more} {np}|{more} {np} please)",
        "amount": "i (want|need) {amount} {thing}{where}",
        "setting": "(set|put) {np} {level}",
        "indirect": "{indirect}",
    },
    "bring": {
        "bring-me": "bring me {item}",
        "fetch": "(get|fetch|grab) me {item}",
        "need": "i (need|want) {item}",
        "polite-request": "(could|can|would) you [please] (bring|get) me {item}",
        "go-get": "go (get|fetch) {item}",
        "please-command": "(please bring me {item}|bring me {item} please)",
        "ellipsis": "{bare} please",
    },
    "language": {
        "change-to": "(change|switch) [the] language{target}",
        "set-to": "set [the] language{target}",
        "polite-request": "(could|can|would) you [please] change [the] language{target}",
        "want": "i (want|would like) to change [the] language{target}",
        "use": "(use|switch to) {language}",
        "ellipsis": "{language} please",
        "settings": "(open|change) [the] language settings{target}",
    },
}

_TOKEN = re.compile(r"\(|\)|\[|\]|\||[^()\[\]|]+")


@cache
def _expand(template: str) -> tuple[str, ...]:
    """All strings a template (with ``(a|b)`` and ``[x]``, no ``{}``) can produce."""
    tokens = _TOKEN.findall(template)
    position = 0

    def sequence(stop: set[str]) -> list[str]:
        nonlocal position
        results = [""]
        while position < len(tokens) and tokens[position] not in stop:
            token = tokens[position]
            position += 1
            if token == "(":
                options = alternatives(")")
            elif token == "[":
                options = alternatives("]") + [""]
            else:
                options = [token]
            results = [left + right for left in results for right in options]
        return results

    def alternatives(closing: str) -> list[str]:
        nonlocal position
        options = []
        while True:
            options += sequence({"|", closing})
            if position >= len(tokens):
                raise ValueError(f"unbalanced template {template!r}")
            token = tokens[position]
            position += 1
            if token == closing:
                return options

    expanded = sequence(set())
    if position != len(tokens):
        raise ValueError(f"unbalanced template {template!r}")
    return tuple(dict.fromkeys(" ".join(text.split()) for text in expanded))


def _fill(template: str, entries: dict[str, str]) -> str:
    for _ in range(5):  # lexicon entries may refer to other entries ({where} inside {indirect})
        if "{" not in template:
            return template
        template = template.format(**entries)
    raise ValueError(f"template does not resolve: {template!r}")


@dataclass(frozen=True)
class Phrasing:
    intent: Intent
    family: str  # "<group>/<template family>"
    text: str


def phrasings(intent: Intent) -> list[Phrasing]:
    """Every phrasing of an intent, in a fixed order, tagged with its family."""
    entries = lexicon(intent)
    result: list[Phrasing] = []
    seen: set[str] = set()  # one text, one family: the first that produces it
    for family, template in TEMPLATES[intent.group].items():
        try:
            filled = _fill(template, entries)
        except KeyError:
            continue  # the template needs a filler this intent does not have
        result += [
            Phrasing(intent, f"{intent.group}/{family}", text)
            for text in _expand(filled)
            if text not in seen and not seen.add(text)
        ]
    return result


def words(text: str) -> set[str]:
    return set(text.split())
