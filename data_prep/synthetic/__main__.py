"""``python -m data_prep.synthetic --out DIR --size tiny|small|full [--seed N] [--grammar FILE]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep.synthetic.engines import ENGINES
from data_prep.synthetic.generate import (
    DEFAULT_GRAMMAR,
    DEFAULT_HELD_OUT_ENGINE,
    NO_ENGINE,
    PRESETS,
    UNSEEN_ENGINE_SPLIT,
    SyntheticConfig,
    prepare_synthetic,
)
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Synthesise a spoken-commands corpus from a grammar file offline, with every TTS "
        "engine installed (by default the FSC grammar: the built-in corpus).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (audio/, manifests/)")
    parser.add_argument("--size", choices=sorted(PRESETS), default="tiny", help="size preset")
    parser.add_argument(
        "--grammar",
        type=Path,
        default=DEFAULT_GRAMMAR,
        help="grammar file: Home Assistant intents YAML, a Rhino context YAML, or a house description "
        "(docs/grammar.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole plan")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="comma-separated TTS engines to use when installed",
    )
    parser.add_argument(
        "--held-out-engine",
        default=DEFAULT_HELD_OUT_ENGINE,
        help=f"engine heard only in the {UNSEEN_ENGINE_SPLIT} split, never in train or valid "
        f"('{NO_ENGINE}': no such split; a missing engine is skipped with a warning)",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="worker processes (0: every core)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    config = SyntheticConfig(
        size=args.size,
        seed=args.seed,
        engines=[name.strip() for name in args.engines.split(",") if name.strip()],
        held_out_engine=args.held_out_engine.strip(),
        num_workers=args.num_workers,
        grammar=str(args.grammar),
    )
    try:
        manifests = prepare_synthetic(args.out, config)
    except (SlukdError, OSError) as error:
        logging.getLogger("data_prep.synthetic").error("%s", " ".join(str(error).split()))
        return 1
    for split, manifest in manifests.items():
        logging.info("%s: %d utterances, %.2f h", split, len(manifest), manifest.total_duration / 3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
