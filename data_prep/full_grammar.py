"""The training folder of the deployed model: every expression of the grammar.

The grammar corpus holds expression shapes and slot-value combinations out of ``train`` so that
``valid`` and ``test_unseen_phrasing`` measure phrasings no model was trained on. A person who
uses the model says every expression of the grammar, though, so the model that is deployed also
trains on ``train_rest`` (those held-out pools said by training voices, in texts no other split
says; :mod:`pipeline.grammar.sampler`).

``python -m data_prep.full_grammar --corpus data/grammar_x_small/openset --out data/grammar_x_small/full``
writes ``OUT/manifests/``: ``train`` = the corpus's ``train`` + ``train_rest``, ``valid`` as it is
(its held-out half is no longer unseen shapes for this model, only unseen texts) and
``labels.json``. Audio is not copied: the manifests point at the corpus's files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep.command_line import HelpFormatter
from data_prep.ood.mix import relocated
from data_prep.rows import MANIFEST_DIRNAME, one_line
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging
from pipeline.data.labels import LABELS_FILENAME, LabelSet
from pipeline.data.manifest import Manifest, find_manifests, read_manifest, write_split_manifests

logger = logging.getLogger(__name__)

REST_SPLIT = "train_rest"


def write_full_grammar(corpus_dir: str | Path, out_dir: str | Path) -> dict[str, Manifest]:
    """Write the deployed model's training folder (see the module docstring); its manifests by split.

    Raises:
        SlukdError: the corpus has no ``train``, ``valid`` or ``train_rest`` (named in the message).
    """
    corpus = find_manifests(corpus_dir)
    missing = [split for split in ("train", "valid", REST_SPLIT) if split not in corpus]
    if missing:
        raise SlukdError(
            f"{corpus_dir}: missing split(s) {', '.join(missing)} (train_rest comes from a grammar corpus "
            f"synthesised by python -m data_prep.synthetic)"
        )
    labels_path = corpus["train"].parent / LABELS_FILENAME
    labels = LabelSet.load(labels_path)
    folder = Path(out_dir) / MANIFEST_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": relocated(read_manifest(corpus["train"]), folder)
        + relocated(read_manifest(corpus[REST_SPLIT]), folder),
        "valid": relocated(read_manifest(corpus["valid"]), folder),
    }
    manifests = write_split_manifests(splits, folder, labels)  # labels.json, the step's marker, last
    for split, manifest in manifests.items():
        logger.info("%s: %d utterances", split, len(manifest))
    return manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.full_grammar", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--corpus", type=Path, required=True, help="the grammar corpus (its manifests/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (manifests/ only)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        write_full_grammar(args.corpus, args.out)
    except (SlukdError, OSError) as error:
        logger.error("%s", one_line(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
