""" "Your home": Home Assistant's own intents, restricted to a house a user describes.

The ``home-assistant-intents`` package ships each language's sentences as one JSON document in
Home Assistant's intent format (``home_assistant_intents.get_intents(language)``: intents,
lists, expansion rules, skip words). A house description (``house.yaml``) names what that
document leaves to the running Home Assistant, the areas and the devices::

    house:
      language: en
      areas: [kitchen, living room]
      floors: [upstairs]                    # optional
      devices:                              # Home Assistant domain -> device names
        light: [ceiling light, desk lamp]
        media_player: [tv]
      intents: [HassTurnOn, HassTurnOff]    # optional: DEFAULT_INTENTS
      numbers:                              # optional: number lists with fewer values
        brightness: {from: 10, to: 100, step: 10}

:func:`homeassistant_house_grammar` keeps the chosen intents, and of their sentence blocks
those whose domains the house has (a block's fixed ``domain`` slot and its
``requires_context`` domains); ``{area}``, ``{floor}`` and ``{name}`` become the house's lists
(each name carries its domain as context, so a light's name is never said to a lock's
sentence); blocks that need a list the house lacks (no floors) are left out, and sentences that
need free text (wildcard lists) are left out with one warning.
"""

from __future__ import annotations

import os
from pathlib import Path

from hassil.parse_expression import parse_sentence

from pipeline.grammar.homeassistant import grammar_from_homeassistant
from pipeline.grammar.model import Grammar, GrammarError, read_yaml

HOUSE_FILENAME = "house.yaml"
HOUSE_LISTS = ("area", "floor", "name")
# The intents without free text: on/off, lights, climate, covers, media, timers, time, weather.
DEFAULT_INTENTS = (
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassClimateSetTemperature",
    "HassClimateGetTemperature",
    "HassSetPosition",
    "HassMediaPause",
    "HassMediaUnpause",
    "HassMediaNext",
    "HassMediaPrevious",
    "HassSetVolume",
    "HassMediaPlayerMute",
    "HassMediaPlayerUnmute",
    "HassStartTimer",
    "HassCancelTimer",
    "HassPauseTimer",
    "HassUnpauseTimer",
    "HassTimerStatus",
    "HassGetCurrentTime",
    "HassGetCurrentDate",
    "HassGetWeather",
)


def _strings(value: object, what: str, path: Path) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise GrammarError(f"{path}: '{what}' must be a list of names")
    return [" ".join(item.split()) for item in value]


def _package_intents(language: str, path: Path) -> dict:
    try:
        import home_assistant_intents
    except ImportError:
        raise GrammarError(
            f"{path}: a house grammar needs the home-assistant-intents package: pip install 'slukd[grammar]'"
        ) from None
    document = home_assistant_intents.get_intents(language)
    if document is None:
        raise GrammarError(f"{path}: home-assistant-intents has no language {language!r}")
    return document


def _referenced_lists(sentence: str, rules: dict) -> set[str]:
    """List names a sentence refers to, through its (parsed) rules."""
    return set(parse_sentence(sentence, keep_text=True).list_names(rules))


def _block_domains(block: dict) -> set[str]:
    domains: set[str] = set()
    fixed = (block.get("slots") or {}).get("domain")
    required = (block.get("requires_context") or {}).get("domain")
    for value in (fixed, required):
        if isinstance(value, str):
            domains.add(value)
        elif isinstance(value, list):
            domains.update(value)
    return domains


def house_document(house: dict, path: Path) -> dict:
    """The Home Assistant intents document of a house description (see the module docstring)."""
    language = str(house.get("language") or "en")
    areas = _strings(house.get("areas"), "areas", path)
    floors = _strings(house.get("floors"), "floors", path)
    devices = house.get("devices") or {}
    if not isinstance(devices, dict):
        raise GrammarError(f"{path}: 'devices' must map a Home Assistant domain to device names")
    names = {str(domain): _strings(found, f"devices.{domain}", path) for domain, found in devices.items()}
    wanted = house.get("intents")
    wanted = list(DEFAULT_INTENTS) if wanted is None else _strings(wanted, "intents", path)
    package = _package_intents(language, path)
    unknown = [intent for intent in wanted if intent not in package["intents"]]
    if unknown:
        raise GrammarError(
            f"{path}: unknown intent {unknown[0]!r}; home-assistant-intents ({language}) has "
            + ", ".join(sorted(package["intents"]))
        )

    lists = dict(package.get("lists") or {})
    numbers = house.get("numbers") or {}
    if not isinstance(numbers, dict):
        raise GrammarError(f"{path}: 'numbers' must map a list name to {{from, to, step}}")
    for name, bounds in numbers.items():
        if (
            not isinstance(bounds, dict)
            or not {"from", "to"} <= set(bounds)
            or set(bounds) - {"from", "to", "step"}
        ):
            raise GrammarError(f"{path}: numbers.{name} must be {{from: N, to: M[, step: S]}}")
        lists[str(name)] = {"range": {key: int(value) for key, value in bounds.items()}}
    own = {
        "area": [{"in": area, "out": area} for area in areas],
        "floor": [{"in": floor, "out": floor} for floor in floors],
        "name": [
            {"in": name, "out": name, "context": {"domain": domain}}
            for domain, domain_names in names.items()
            for name in domain_names
        ],
    }
    for name, values in own.items():
        if values:
            lists[name] = {"values": values}
        else:
            lists.pop(name, None)
    house_domains = {domain for domain, domain_names in names.items() if domain_names}

    rules = package.get("expansion_rules") or {}
    parsed_rules = {name: parse_sentence(body, keep_text=True) for name, body in rules.items()}
    intents = {}
    for intent in wanted:
        blocks = []
        for block in package["intents"][intent]["data"]:
            domains = _block_domains(block)
            if domains and not domains & house_domains:
                continue
            local = {
                name: parse_sentence(body, keep_text=True)
                for name, body in (block.get("expansion_rules") or {}).items()
            }
            sentences = [
                sentence
                for sentence in block["sentences"]
                if not _referenced_lists(sentence, {**parsed_rules, **local}) - set(lists)
            ]
            if sentences:
                blocks.append({**block, "sentences": sentences})
        if blocks:
            intents[intent] = {"data": blocks}
    if not intents:
        raise GrammarError(f"{path}: none of the intents has a sentence this house can say")
    return {
        "language": language,
        "intents": intents,
        "lists": lists,
        "expansion_rules": rules,
        "skip_words": package.get("skip_words") or [],
    }


def homeassistant_house_grammar(house_yaml: str | os.PathLike) -> Grammar:
    """The grammar of Home Assistant's own intents for the house that ``house_yaml`` describes."""
    path = Path(house_yaml)
    data = read_yaml(path)
    house = data.get("house") if isinstance(data, dict) else None
    if not isinstance(house, dict):
        raise GrammarError(f"{path}: a house description needs a top-level 'house' mapping")
    return grammar_from_homeassistant(house_document(house, path), path)
