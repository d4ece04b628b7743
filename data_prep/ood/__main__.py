"""``python -m data_prep.ood --out DIR --size tiny|small|full [--seed N] [--in-domain MANIFEST ...]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep.command_line import HelpFormatter
from data_prep.ood.generate import SIZES, OodConfig, prepare_ood
from data_prep.rows import one_line
from data_prep.synthetic.engines import ENGINES
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging
from pipeline.data.open_set import OOD_SPLITS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.ood",
        description="Synthesise out-of-domain audio (other domains, generic sentences, near misses, "
        "non-speech), intent 'unknown', in splits ood_train, ood_valid and ood_test (held-out kinds).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (audio/, manifests/)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="utterances per kind and split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole plan")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated TTS engines, when installed"
    )
    parser.add_argument("--held-out-engine", default="piper",
                        help="engine heard only in ood_test ('none': no such engine)")  # fmt: skip
    parser.add_argument("--in-domain", type=Path, nargs="*", default=[],
                        help="manifests whose transcripts near misses are made from (default: the built-in grammar)")  # fmt: skip
    parser.add_argument("--splits", default=",".join(OOD_SPLITS),
                        help="the splits to synthesise (the plan, so each split's texts, voices and sounds, stays the same: "
                        "ood_test alone is what an evaluation without outlier exposure needs)")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=0, help="worker processes (0: every core)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    config = OodConfig(
        size=args.size,
        seed=args.seed,
        engines=[name.strip() for name in args.engines.split(",") if name.strip()],
        held_out_engine=args.held_out_engine.strip(),
        in_domain=[str(path) for path in args.in_domain],
        num_workers=args.num_workers,
        splits=[name.strip() for name in args.splits.split(",") if name.strip()],
    )
    try:
        manifests = prepare_ood(args.out, config)
    except (SlukdError, OSError) as error:
        logging.getLogger("data_prep.ood").error("%s", one_line(error))
        return 1
    for split, manifest in manifests.items():
        logging.info("%s: %d utterances, %.2f min", split, len(manifest), manifest.total_duration / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
