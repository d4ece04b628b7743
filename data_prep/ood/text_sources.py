"""Text that is not a command of the grammar, in three kinds, each with a held-out part.

- ``other_domain``: Home Assistant's English intents (``home-assistant-intents``, Apache-2.0,
  expanded with ``hassil``, Apache-2.0) outside the built-in grammar's domain (no lights,
  heating, volume or music on/off), plus questions and chit-chat from templates written here.
  Held out: whole Home Assistant intents (weather, the time, "play <artist>", shopping lists,
  ...) and a template family of questions and of chit-chat.
- ``generic``: sentences of the Python language reference's help topics (``pydoc_data.topics``,
  part of Python's standard library, which Debian's ``libpython3-stdlib`` installs; PSF License
  2.0). Held out: a seeded quarter of the topics.
- ``near_miss``: the in-domain sentences (from manifests, or the built-in grammar) with a slot
  word replaced by a value the domain lacks ("turn on the garage lights"), their words in
  another order, and fragments. Held out: the replacement vocabulary and half the source
  sentences. A candidate that normalises to an in-domain sentence is dropped.

Every function returns ``(seen, held_out)``: lists of :class:`OodText`.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.data.text import normalize_transcript

HOME_ASSISTANT_LICENSE = "Apache-2.0 (home-assistant-intents, hassil)"
GENERIC_LICENSE = "PSF-2.0 (Python standard library, pydoc_data.topics)"

# Home Assistant intents whose sentences overlap the built-in grammar's domain (switching,
# brightness, volume, temperature, music play/pause): never used as out-of-domain text.
HOME_ASSISTANT_IN_DOMAIN = (
    "HassTurnOn", "HassTurnOff", "HassLightSet", "HassSetVolume", "HassSetVolumeRelative",
    "HassClimateSetTemperature", "HassMediaPause", "HassMediaUnpause", "HassMediaPlayerMute",
    "HassMediaPlayerUnmute",
)  # fmt: skip
# Held out for the test split (the "what time is it", "play the beatles" among them).
HOME_ASSISTANT_HELD_OUT = (
    "HassGetWeather", "HassGetCurrentTime", "HassGetCurrentDate", "HassMediaSearchAndPlay",
    "HassShoppingListAddItem", "HassListAddItem", "HassVacuumStart", "HassStartTimer",
)  # fmt: skip
# Slot lists the intents' templates refer to: places and things outside the grammar's rooms.
HOME_ASSISTANT_LISTS = {
    "name": ["front door", "garage door", "living room tv", "robot vacuum", "porch", "lawn mower"],
    "area": ["living room", "garage", "office", "hallway", "dining room"],
    "floor": ["upstairs", "downstairs", "first floor"],
    "search_query": ["the beatles", "taylor swift", "a podcast about history", "the news", "jazz radio"],
    "shopping_list_item": ["eggs", "bread", "milk", "batteries", "apples"],
    "todo_list_item": ["call the plumber", "pay the bills", "water the plants"],
    "message": ["dinner is ready", "we are leaving in five minutes"],
    "timer_name": ["pasta", "laundry"],
    "zone": ["work", "school"],
}

QUESTIONS = {
    "wh": [
        "(what|when) is the next (bus|train) to (town|the airport)",
        "how (far|long) is it to the (station|beach|city centre)",
        "who (wrote|directed) (this book|that film)",
        "where did I put my (glasses|phone|passport)",
        "why is the sky blue",
    ],
    "yes_no": [
        "is it going to (rain|snow) (tomorrow|this weekend)",
        "do you know (any good jokes|a good recipe for soup)",
        "can you (spell|define) the word (necessary|rhythm)",
        "are the shops open on (sunday|holidays)",
    ],
    "how_to": [  # held out
        "how do I (boil an egg|tie a tie|change a tyre)",
        "how many (days|weeks) are there in a (year|month)",
        "what is the capital of (france|peru|canada)",
    ],
}
CHIT_CHAT = {
    "greeting": [
        "(hello|hi|good morning) how are you (today|doing)",
        "nice to meet you",
        "thank you (very much|so much) for your help",
        "(see you later|goodbye|good night)",
    ],
    "remark": [
        "I (really|quite) like this (song|weather|place)",
        "that was a (great|long|funny) (day|story|film)",
        "my (sister|neighbour|friend) is coming (tomorrow|on friday)",
        "I think (we should go|it is getting late)",
    ],
    "order": [  # held out: what a stranger says to a kiosk, not to a home
        "(can I|could I) have a (large|small) (coffee|latte|tea) (please|to go)",
        "one (cheeseburger|pizza|salad) (and a cola|with fries) please",
        "I would like to (book a table|pay by card)",
    ],
}
HELD_OUT_FAMILIES = ("how_to", "order")

# near-miss replacement vocabulary per kind of slot word: (seen, held out)
NEAR_MISS_VALUES = {
    "location": (["garage", "garden", "attic", "hallway"], ["basement", "office", "porch"]),
    "thing": (["fan", "television", "oven", "curtains"], ["dishwasher", "printer", "kettle"]),
    "item": (["umbrella", "keys", "coffee", "jacket"], ["sandwich", "wallet", "gloves"]),
    "language": (["french", "spanish", "italian"], ["japanese", "russian", "dutch"]),
}
# the grammar's slot words (and their lexicon variants), by kind
SLOT_WORDS = {
    "location": ["kitchen", "bedroom", "washroom", "bathroom"],
    "thing": ["lights", "light", "lamp", "music", "volume", "sound", "heat", "heating", "temperature"],
    "item": ["newspaper", "paper", "juice", "socks", "shoes"],
    "language": ["chinese", "korean", "english", "german"],
}
NEAR_MISS_OPERATIONS = ("wrong_value", "reordered", "fragment")


@dataclass(frozen=True)
class OodText:
    """One out-of-domain sentence: its kind, where it came from, the text."""

    kind: str
    source: str  # e.g. home_assistant:HassGetWeather, questions:wh, pydoc:compound, near_miss:fragment
    text: str


def _expand(template: str) -> list[str]:
    """Every sentence of a template with ``(a|b)`` alternatives (no nesting)."""
    parts = re.split(r"(\([^()]*\))", template)
    choices = [part[1:-1].split("|") if part.startswith("(") else [part] for part in parts]
    return [" ".join("".join(combo).split()) for combo in itertools.product(*choices)]


def _stable_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\t{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _templates(kind: str, family_name: str, families: dict[str, list[str]]) -> tuple[list, list]:
    seen, held = [], []
    for family, templates in families.items():
        texts = [text for template in templates for text in _expand(template)]
        target = held if family in HELD_OUT_FAMILIES else seen
        target += [OodText(kind, f"{family_name}:{family}", text) for text in texts]
    return seen, held


def home_assistant_texts(max_per_intent: int = 60) -> tuple[list[OodText], list[OodText]]:
    """Sentences of Home Assistant's English intents outside the domain: (seen, held out).

    Range slots (numbers) are filled with a number; wildcard slots with the lists above.
    """
    import home_assistant_intents
    from hassil.intents import Intents, TextSlotList
    from hassil.sample import sample_intents

    data = home_assistant_intents.get_intents("en")
    intents = Intents.from_dict(data)
    slot_lists = {name: TextSlotList.from_strings(values) for name, values in HOME_ASSISTANT_LISTS.items()}
    names = {name for name in data["intents"] if name not in HOME_ASSISTANT_IN_DOMAIN}
    seen, held = [], []
    sampled = sample_intents(
        intents, slot_lists=slot_lists, max_sentences_per_intent=max_per_intent, intent_names=names,
        expand_ranges=False, language="en", exclude_sentences_with_wildcards=False,
    )  # fmt: skip
    for number, (intent, text) in enumerate(sampled):
        text = re.sub(r"\{\w+\}", str(3 + (number * 7) % 40), text)
        text = " ".join(text.split())
        if not text or "{" in text:
            continue
        target = held if intent in HOME_ASSISTANT_HELD_OUT else seen
        target.append(OodText("other_domain", f"home_assistant:{intent}", text))
    return _distinct(seen), _distinct(held)


def other_domain_texts() -> tuple[list[OodText], list[OodText]]:
    """Home Assistant's out-of-domain intents, questions and chit-chat: (seen, held out)."""
    seen, held = home_assistant_texts()
    for name, families in (("questions", QUESTIONS), ("chit_chat", CHIT_CHAT)):
        more_seen, more_held = _templates("other_domain", name, families)
        seen += more_seen
        held += more_held
    return _distinct(seen), _distinct(held)


def generic_texts(seed: int = 0) -> tuple[list[OodText], list[OodText]]:
    """Plain sentences of the Python language reference's topics: (seen, held-out topics)."""
    from pydoc_data.topics import topics

    seen, held = [], []
    for topic, body in sorted(topics.items()):
        text = re.sub(r"-{3,}|\*\*?|``?", " ", body)
        text = re.sub(r"\s+", " ", text)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            words = sentence.split()
            if 4 <= len(words) <= 16 and re.fullmatch(r"[A-Za-z][A-Za-z ,;'-]*[.?!]", sentence):
                target = held if _stable_fraction(topic, seed) < 0.25 else seen
                target.append(OodText("generic", f"pydoc:{topic}", sentence))
    return _distinct(seen), _distinct(held)


def near_miss_texts(
    in_domain: Iterable[str], rng: np.random.Generator, seed: int = 0, commands: Iterable[str] = ()
) -> tuple[list[OodText], list[OodText]]:
    """Near misses of the in-domain sentences ``in_domain``: (seen, held out). A candidate that
    normalises to one of them or of ``commands`` (every sentence the model must accept: the
    built-in grammar's phrasings, which the corpus's test splits hold too) is dropped.

    Half of the source sentences (by a stable hash) feed the seen part with the seen
    replacement values, the other half the held-out part with the held-out values.
    """
    sentences = sorted({normalize_transcript(text) for text in in_domain} - {""})
    forbidden = set(sentences) | {normalize_transcript(text) for text in commands}
    kind_of_word = {word: kind for kind, words in SLOT_WORDS.items() for word in words}
    seen: list[OodText] = []
    held: list[OodText] = []
    for sentence in sentences:
        held_out = _stable_fraction(sentence, seed) < 0.5
        target = held if held_out else seen
        words = sentence.split()
        slots = [i for i, word in enumerate(words) if word in kind_of_word]
        if slots:
            position = slots[int(rng.integers(len(slots)))]
            values = NEAR_MISS_VALUES[kind_of_word[words[position]]][int(held_out)]
            replaced = [*words[:position], values[int(rng.integers(len(values)))], *words[position + 1 :]]
            target.append(OodText("near_miss", "near_miss:wrong_value", " ".join(replaced)))
        if len(words) >= 3:
            order = rng.permutation(len(words))
            if list(order) != sorted(order):
                target.append(OodText("near_miss", "near_miss:reordered", " ".join(words[i] for i in order)))
            length = int(rng.integers(1, len(words) - 1))
            start = int(rng.integers(0, len(words) - length + 1))
            target.append(OodText("near_miss", "near_miss:fragment", " ".join(words[start : start + length])))
    keep = [item for item in _distinct(seen) if item.text not in forbidden]
    keep_held = [item for item in _distinct(held) if item.text not in forbidden]
    return keep, keep_held


def _distinct(items: list[OodText]) -> list[OodText]:
    """``items`` without repeated texts (first kept)."""
    kept, texts = [], set()
    for item in items:
        key = normalize_transcript(item.text)
        if key and key not in texts:
            texts.add(key)
            kept.append(item)
    return kept
