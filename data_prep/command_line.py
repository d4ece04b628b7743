"""The command line every corpus preparer shares: the parser's common options and ``run_cli``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from data_prep.rows import MANIFEST_DIRNAME, SKIPPED_FILENAME, one_line
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging
from pipeline.data.audio import AudioError
from pipeline.data.labels import LabelError
from pipeline.data.manifest import Manifest, ManifestError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (where there is one to show); description and epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or any(action.default is value for value in (None, False, argparse.SUPPRESS))
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser(
    module: str, description: str, *, epilog: str | None = None, corpus_dir_help: str | None = None
) -> argparse.ArgumentParser:
    """A preparer's parser with the shared options: ``--corpus-dir``, ``--out``, ``--skip-invalid``,
    ``--num-workers``, ``--log-level``.

    Args:
        module: the module run with ``python -m``.
        corpus_dir_help: help for an optional ``--corpus-dir``; ``None`` makes it required.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, epilog=epilog, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        required=corpus_dir_help is None,
        default=None,
        help=corpus_dir_help or "the corpus folder, as released",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help=f"output folder; manifests and labels.json go to OUT/{MANIFEST_DIRNAME}/",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help=f"drop invalid rows (logged, and listed in OUT/{MANIFEST_DIRNAME}/{SKIPPED_FILENAME}) "
        "instead of stopping at the first",
    )
    parser.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=0,
        help="threads reading audio headers (0: automatic)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level",
    )
    return parser


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    prepare: Callable[[argparse.Namespace], Mapping[str, Manifest]],
) -> int:
    """Parse ``argv``, set up logging, run ``prepare``; an error is one logged line and exit status 1."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    command_logger = logging.getLogger(parser.prog.split()[-1])
    command_logger.info("%s %s", parser.prog, shlex.join(sys.argv[1:] if argv is None else argv))
    start = time.monotonic()
    try:
        prepare(args)
    except (SlukdError, ManifestError, LabelError, AudioError, OSError) as error:
        command_logger.error("%s", one_line(error))
        return 1
    command_logger.info("done in %.1f s", time.monotonic() - start)
    return 0
