"""Name -> class registries whose entries register themselves when their module is imported.

The front-ends (:mod:`pipeline.frontends.base`) and the student families (:mod:`pipeline.students.registry`)
keep a dict of what is registered and a dict of which module registers each known name, so a
family that needs an optional package costs nothing until a config names it.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from pipeline.core.errors import SlukdError

T = TypeVar("T")


def lookup(kind: str, name: str, registered: dict[str, T], modules: dict[str, str],
           error: type[SlukdError]) -> T:  # fmt: skip
    """The entry ``name`` of a registry, importing the module that registers it on first use.

    Args:
        kind: what the registry holds, for messages ("front-end", "student family").
        registered: the registry itself (filled by the modules' registration decorators).
        modules: known name -> the module that registers it.
        error: the one-line error class to raise.

    Raises:
        error: an unknown name, a module that cannot be imported (a missing package), or a module
            that does not register the name.
    """
    if name not in registered:
        module = modules.get(name) if isinstance(name, str) else None
        if module is None:
            known = sorted({*registered, *modules})
            raise error(f"unknown {kind} {name!r}; known: {', '.join(known)}")
        try:
            importlib.import_module(module)
        except ImportError as cause:
            raise error(f"{kind} {name!r} needs {module}, which cannot be imported ({cause})") from None
        if name not in registered:
            raise error(f"{module} does not register a {kind} {name!r}")
    return registered[name]
