"""The columns of a CSV/TSV file of utterances: which header plays which role (audio, transcript,
intent, speaker, id, split, ``slot:NAME``, extra), and the default utterance id. Shared by
:mod:`data_prep.csv_manifest` (a corpus) and :mod:`data_prep.eval_csv` (recordings to evaluate on)."""

from __future__ import annotations

from pathlib import PurePath

from data_prep.rows import DataPrepError
from data_prep.tables import Table

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "path", "file", "audio_path", "wav"),
    "transcript": ("transcript", "text", "transcription", "sentence"),
    "intent": ("intent", "label"),
    "speaker": ("speaker", "speaker_id", "speakerid"),
    "id": ("id", "utt_id", "utterance_id"),
}
REQUIRED_ROLES = ("audio", "transcript", "intent")
SPLIT_COLUMN = "split"
SLOT_PREFIX = "slot:"
RESERVED_COLUMNS = ("duration", "sample_rate", "slots")


def column_roles(
    table: Table, has_split: bool, required: tuple[str, ...] = REQUIRED_ROLES
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Which header column plays which role (``required``: the roles that must have a column).

    Returns:
        role -> column, slot name -> column, and the extra columns kept as they are.

    Raises:
        DataPrepError: a missing required column, two columns for one role, a reserved name, or
            a ``split`` column where the split is already given (or none where it is not).
    """
    alias_role = {alias: role for role, aliases in COLUMN_ALIASES.items() for alias in aliases}
    roles: dict[str, str] = {}
    slots: dict[str, str] = {}
    extra: list[str] = []
    for column in table.columns:
        key = column.lower()
        if not column:
            continue
        if key in RESERVED_COLUMNS:
            raise DataPrepError(f"{table.path}: column {column!r} is computed from the audio; remove it")
        if key == SPLIT_COLUMN:
            if has_split:
                raise DataPrepError(
                    f"{table.path}: has a {SPLIT_COLUMN!r} column but its split is given as SPLIT=PATH; "
                    "give the file without SPLIT= to use the column"
                )
            roles[SPLIT_COLUMN] = column
        elif key.startswith(SLOT_PREFIX):
            name = column[len(SLOT_PREFIX) :].strip()
            if not name or name in slots:
                raise DataPrepError(f"{table.path}: bad or repeated slot column {column!r}")
            slots[name] = column
        elif key in alias_role:
            role = alias_role[key]
            if role in roles:
                raise DataPrepError(
                    f"{table.path}: columns {roles[role]!r} and {column!r} both give the {role}"
                )
            roles[role] = column
        else:
            extra.append(column)
    missing = [role for role in required if role not in roles]
    if not has_split and SPLIT_COLUMN not in roles:
        missing.append(SPLIT_COLUMN)
    if missing:
        wanted = "; ".join(
            f"{role!r} (or {', '.join(repr(a) for a in COLUMN_ALIASES[role][1:])})"
            if role in COLUMN_ALIASES
            else repr(role)
            for role in missing
        )
        raise DataPrepError(
            f"{table.path}: missing column(s) {wanted}; found {', '.join(map(repr, table.columns))}"
        )
    return roles, slots, extra


def default_id(audio: str) -> str:
    """An utterance id from an audio path as written: no suffix, no ``..``, ``/`` as ``-``."""
    path = PurePath(audio.replace("\\", "/"))
    parts = [
        part
        for part in path.with_suffix("").parts
        if part not in ("/", ".", "..", "~") and part != path.anchor
    ]
    return "-".join(parts)
