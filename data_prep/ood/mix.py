"""An open-set corpus for outlier exposure: an in-domain corpus plus the out-of-domain one.

``python -m data_prep.ood.mix --corpus data/synthetic --ood data/ood --out data/synthetic_openset``
writes ``OUT/manifests/``: ``train`` = the corpus's train + ``ood_train``, ``valid`` = its valid
+ ``ood_valid`` (intent ``unknown``), every other split of the corpus as it is, the three
``ood_*`` splits as they are, and ``labels.json`` = the corpus's intents + ``unknown`` (last,
so every other id keeps its meaning). Audio is not copied: the manifests point at the two
corpora's files. The stages after it (features, teacher, targets, students) run on OUT
unchanged: the teacher learns ``unknown`` on the text (non-speech rows read as the marker
transcript of :data:`pipeline.data.open_set.NO_SPEECH_TRANSCRIPT`), and the students learn it
from the audio and the teacher's targets. Training on the corpus itself, nothing changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from data_prep.command_line import HelpFormatter
from data_prep.rows import MANIFEST_DIRNAME, one_line
from pipeline.core.errors import SlukdError
from pipeline.core.logging_utils import setup_logging
from pipeline.data.labels import LABELS_FILENAME, LabelSet
from pipeline.data.manifest import Manifest, find_manifests, read_manifest
from pipeline.data.open_set import OOD_SPLITS, with_unknown

logger = logging.getLogger(__name__)

MIXED_SPLITS = {"train": "ood_train", "valid": "ood_valid"}


def relocated(manifest: Manifest, folder: Path) -> list:
    """The utterances of ``manifest`` with audio paths relative to ``folder``."""
    return [
        dataclasses.replace(
            utterance, audio=os.path.relpath(manifest.audio_path(utterance).resolve(), folder)
        )
        for utterance in manifest
    ]


def mix_open_set(
    corpus_dir: str | Path, ood_dir: str | Path, out_dir: str | Path, mix: bool = True
) -> dict[str, Manifest]:
    """Write the open-set corpus (see the module docstring); returns its manifests by split.
    ``mix`` False: train, valid and the labels stay the corpus's, and the ``ood_*`` splits only
    join the others (for the open-set evaluation of models trained without outlier exposure)."""
    corpus, ood = find_manifests(corpus_dir), find_manifests(ood_dir)
    needed = (*MIXED_SPLITS, *MIXED_SPLITS.values()) if mix else tuple(MIXED_SPLITS)
    missing = [split for split in needed if split not in {**corpus, **ood}]
    if missing:
        raise SlukdError(f"{corpus_dir} / {ood_dir}: missing split(s) {', '.join(missing)}")
    labels = LabelSet.load(corpus["train"].parent / LABELS_FILENAME)
    labels = with_unknown(labels) if mix else labels
    folder = Path(out_dir) / MANIFEST_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, path in corpus.items():
        utterances = relocated(read_manifest(path), folder)
        if mix and split in MIXED_SPLITS:
            utterances += relocated(read_manifest(ood[MIXED_SPLITS[split]]), folder)
        written[split] = utterances
    for split in OOD_SPLITS:
        if split in ood:
            written[split] = relocated(read_manifest(ood[split]), folder)
    manifests = {}
    for split, utterances in written.items():
        manifest = Manifest(utterances, folder / f"{split}.jsonl")
        if mix or split not in OOD_SPLITS:
            manifest.validate(labels)
        manifest.write()
        manifests[split] = manifest
        logger.info("%s: %d utterances", split, len(manifest))
    labels.save(folder / LABELS_FILENAME)
    return manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.ood.mix", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--corpus", type=Path, required=True, help="the in-domain corpus (its manifests/)")
    parser.add_argument(
        "--ood", type=Path, required=True, help="the out-of-domain corpus (python -m data_prep.ood)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (manifests/ only)")
    parser.add_argument("--mix", choices=("true", "false"), default="true",
                        help="false: train and valid stay the corpus's; the ood splits are added for evaluation only")  # fmt: skip
    parser.add_argument("--log-level", default="INFO", help="logging level")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        mix_open_set(args.corpus, args.ood, args.out, mix=args.mix == "true")
    except (SlukdError, OSError) as error:
        logger.error("%s", one_line(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
