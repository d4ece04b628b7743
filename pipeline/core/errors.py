"""The one error base class of slukd.

Every error that a user can cause (a bad file, a bad config, a missing package) derives from
:class:`SlukdError`. ``pipeline.cli.main.main`` turns any ``SlukdError`` into a one-line message on
stderr and exit code 1, so a command never needs its own try/except to be friendly.
"""

from __future__ import annotations


class SlukdError(Exception):
    """A problem slukd can describe in one line (which file, what is wrong, what to do)."""

    exit_code = 1

    def one_line(self) -> str:
        """The message, folded onto one line."""
        text = " ".join(str(self).split())
        return text or type(self).__name__
