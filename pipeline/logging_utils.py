"""One logging set-up for every command line entry point."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr with timestamps. Safe to call more than once, and leaves other handlers
    (a test's log capture, an application's own) in place."""
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if not any(getattr(handler, "slukd", False) for handler in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        handler.slukd = True
        root.addHandler(handler)
