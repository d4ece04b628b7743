"""The feature store: every utterance's raw front-end features in one float16 memory-mapped array.

Layout of a store folder (one per split)::

    meta.json    front-end config, sha256 of the manifest's audio (``audio_sha256``), frame count,
                 CMVN statistics, skipped files
    frames.f16   float16 [total_frames, num_mel_bins], utterances back to back
    index.json   {"ids": [...], "offsets": [...], "frames": [...]} in store order
    .done        the fingerprint (config + audio hash) the store was built for

A store is keyed by the audio, not by the labels: :func:`audio_sha256` hashes each utterance's
id, resolved audio path and duration only, so label variants of one corpus (other intents,
slots or transcripts over the same recordings) share their stores.

The store is built under a temporary name and renamed when complete; rerunning with the same
config and manifest does nothing, a changed one rebuilds. Audio is decoded in DataLoader workers
while the device computes; global CMVN statistics are accumulated in the same pass.

The store keeps features as :meth:`pipeline.frontends.base.FrontEnd.extract` gives them (fbank before
CMVN). It never normalises: the front-end does, always with the *model's* statistics, which
training takes from the train split's store only (:attr:`FeatureStore.statistics`).

Under ``torchrun`` each rank extracts a contiguous range of the (length-sorted) batches and
rank 0 concatenates the shards: the result is byte-identical to a single-process run, because
the batches, their order and the order of the CMVN sums are the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.core import distributed
from pipeline.core.devices import resolve_device
from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_directory, is_done, mark_done, read_json, write_json
from pipeline.data.batching import WaveformDataset, batches_by_duration, collate_waveforms
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.data.vad import TRIM_SILENCE_DEFAULT
from pipeline.frontends.base import FbankFrontEnd, FrontEnd, FrontEndError, build_frontend
from pipeline.frontends.fbank import FbankConfig

logger = logging.getLogger(__name__)

STORE_VERSION = 1
META_FILE, INDEX_FILE, FRAMES_FILE = "meta.json", "index.json", "frames.f16"
VARIANCE_FLOOR = 1e-8


class FeatureStoreError(SlukdError, ValueError):
    """A store that is missing, incomplete, or built for another config or manifest."""


@dataclass
class ExtractionOptions:
    """How to run extraction; none of these change the store's content."""

    device: str = "auto"
    batch_seconds: float = 300.0  # padded audio seconds per batch
    num_workers: int = -1  # DataLoader processes decoding audio; -1: default_num_workers(device)
    strict: bool = False  # a bad file is fatal instead of skipped


def default_num_workers(device: torch.device | str = "cpu") -> int:
    """Decoding processes: on a GPU, all but one core decode (the GPU computes); on the CPU the
    cores compute features, and decoding (cheap next to the FFT) gets a quarter of them
    (none on a 2-core machine, where worker processes measured slower than decoding inline)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return min(4, cores // 4)


def audio_sha256(manifest: Manifest | str | os.PathLike) -> str:
    """The sha256 of what a store's (or a frozen-encoder cache's) content depends on in a manifest:
    each utterance's id, resolved audio path and duration, in order. Labels, transcripts and
    extra fields are left out, so label variants of one corpus share their stores and caches."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    digest = hashlib.sha256()
    for utterance in manifest:
        audio = os.path.abspath(manifest.audio_path(utterance))
        digest.update(f"{utterance.id}\t{audio}\t{float(utterance.duration):.4f}\n".encode())
    return digest.hexdigest()


def as_frontend(config: FbankConfig | FrontEnd | None) -> FrontEnd:
    """A front-end for extraction: as given, or the fbank front-end of an :class:`FbankConfig`."""
    if isinstance(config, FrontEnd):
        return config
    return FbankFrontEnd(config or FbankConfig())


def store_fingerprint(frontend: FbankConfig | FrontEnd, manifest_path: str | os.PathLike,
                      trim_silence: bool = False) -> dict:  # fmt: skip
    """What a store's content depends on: the store version, the front-end's extraction config, the
    manifest's audio (:func:`audio_sha256`, not its labels), and trimming (named only when on)."""
    return {
        "version": STORE_VERSION,
        "feature_config": as_frontend(frontend).extraction_config(),
        "audio_sha256": audio_sha256(manifest_path),
        **({"trim_silence": True} if trim_silence else {}),
    }


class FrameStore:
    """Read access to a finished store of per-utterance float16 frames ``[frames, dim]`` (the layout
    above; memory-mapped, cheap to open in every worker). :class:`FeatureStore` holds front-end
    features; :mod:`pipeline.training.encoder_cache` keeps a frozen encoder's outputs in the same layout."""

    kind, content, missing_hint = "store", "frames", "nothing has written one"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not is_done(self.folder):
            raise FeatureStoreError(f"{self.folder}: no finished {self.kind} here ({self.missing_hint})")
        self.meta = read_json(self.folder / META_FILE)
        index = read_json(self.folder / INDEX_FILE)
        self.ids: list[str] = index["ids"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.num_frames = np.asarray(index["frames"], dtype=np.int64)
        self._position = {utterance_id: i for i, utterance_id in enumerate(self.ids)}
        shape = (int(self.meta["total_frames"]), self.frame_dim())
        self.frames = (
            np.memmap(self.folder / FRAMES_FILE, dtype=np.float16, mode="r", shape=shape)
            if shape[0]
            else np.zeros(shape, np.float16)
        )

    def frame_dim(self) -> int:
        """Width of one stored frame."""
        return int(self.meta["feature_dim"])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, utterance_id: object) -> bool:
        return utterance_id in self._position

    def frame_count(self, utterance_id: str) -> int:
        """Stored frames of one utterance."""
        try:
            return int(self.num_frames[self._position[utterance_id]])
        except KeyError:
            raise FeatureStoreError(
                f"{self.folder}: no {self.content} for utterance {utterance_id!r}"
            ) from None

    def frames_of(self, utterance_id: str) -> np.ndarray:
        """The stored float16 frames ``[frames, dim]`` of one utterance (a view)."""
        try:
            position = self._position[utterance_id]
        except KeyError:
            raise FeatureStoreError(
                f"{self.folder}: no {self.content} for utterance {utterance_id!r}"
            ) from None
        start = self.offsets[position]
        return self.frames[start : start + self.num_frames[position]]

    def features(self, utterance_id: str) -> torch.Tensor:
        """Float32 frames ``[frames, dim]`` of one utterance (raw features of a feature store: not normalised)."""
        return torch.from_numpy(self.frames_of(utterance_id).astype(np.float32))


class FeatureStore(FrameStore):
    """A finished feature store: raw front-end features (see the module docstring)."""

    kind, content, missing_hint = "feature store", "features", "run `slukd features`"

    def frame_dim(self) -> int:
        # stores written before front-ends had names hold fbank features
        self.feature_config = {"name": FbankFrontEnd.name, **self.meta["feature_config"]}
        try:
            self.frontend = build_frontend(self.feature_config)
        except FrontEndError as error:
            raise FeatureStoreError(f"{self.folder / META_FILE}: {error}") from None
        return self.frontend.feature_dim

    @property
    def statistics(self) -> dict:
        """This split's global CMVN statistics ``{"mean": [...], "std": [...]}`` (per feature bin).

        Only the train split's statistics ever normalise anything (through the model's front-end).
        """
        cmvn = self.meta["cmvn"]
        return {"mean": cmvn["mean"], "std": cmvn["std"]}

    @property
    def trim_silence(self) -> bool:
        """Whether leading/trailing non-speech was trimmed before extraction (a model trained on
        the store records it, and inference trims the same way)."""
        return bool(self.meta.get("trim_silence", False))

    def check_compatible(self, frontend: FbankConfig | FrontEnd,
                         manifest_path: str | os.PathLike | None = None) -> None:  # fmt: skip
        """Raise :class:`FeatureStoreError` naming what differs from the requested front-end/manifest."""
        ours, wanted = self.feature_config, as_frontend(frontend).extraction_config()
        differences = [
            f"{key} {ours.get(key)!r} != {wanted[key]!r}" for key in wanted if ours.get(key) != wanted[key]
        ]
        if differences:
            raise FeatureStoreError(
                f"{self.folder}: built with another feature config ({', '.join(differences)}); rebuild it with `slukd features`"
            )
        if manifest_path is not None and audio_sha256(manifest_path) != self.meta.get("audio_sha256"):
            raise FeatureStoreError(
                f"{self.folder}: built from other audio than {manifest_path} names; rebuild it"
            )


def compute_feature_store(
    manifest_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: FbankConfig | FrontEnd | None = None,
    options: ExtractionOptions | None = None,
    trim_silence: bool = TRIM_SILENCE_DEFAULT,
) -> FeatureStore:
    """Extract features for every utterance of a manifest into a store (or reuse a finished one).

    Under torchrun every rank calls this; each extracts its share and rank 0 merges.

    Args:
        manifest_path: the split's manifest.
        output_dir: the store folder.
        config: the front-end whose raw features to store (an :class:`FbankConfig` means the
            fbank front-end with it; default: fbank with Kaldi's defaults).
        options: device, batch size, workers, strictness.
        trim_silence: cut leading and trailing non-speech first (:mod:`pipeline.data.vad`); on for
            new stores, and recorded in the store's meta (and so in every model trained on it).

    Raises:
        FeatureStoreError: with ``strict``, the first bad file; or every file was unusable.
    """
    frontend = as_frontend(config)
    options = options or ExtractionOptions()
    manifest_path, output_dir = Path(manifest_path), Path(output_dir)
    fingerprint = store_fingerprint(frontend, manifest_path, trim_silence)
    if is_done(output_dir, fingerprint):
        logger.info("%s: feature store is up to date, skipping", output_dir)
        return FeatureStore(output_dir)
    rank, world_size = distributed.rank_and_world()
    device = distributed.local_device(resolve_device(options.device))
    manifest = read_manifest(manifest_path)
    batches = batches_by_duration([u.duration for u in manifest], options.batch_seconds)
    work_dir = output_dir.with_name(f".{output_dir.name}.shards")
    if rank == 0:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
    distributed.barrier()

    shard_dir = work_dir / f"rank{rank:04d}"
    shard_dir.mkdir()
    start = time.monotonic()
    mine = batches[rank * len(batches) // world_size : (rank + 1) * len(batches) // world_size]
    try:
        _extract_shard(manifest, mine, shard_dir, frontend, device, options, rank == 0, trim_silence)
        write_json(shard_dir / "status.json", {"ok": True})
    except Exception as error:
        write_json(shard_dir / "status.json", {"ok": False, "error": str(error)})
        if world_size == 1:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
    distributed.barrier()
    failures = [read_json(work_dir / f"rank{r:04d}" / "status.json") for r in range(world_size)]
    failures = [status["error"] for status in failures if not status["ok"]]
    if failures:
        distributed.barrier()
        if rank == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise FeatureStoreError(failures[0])
    if rank == 0:
        _merge_shards(work_dir, world_size, output_dir, frontend.feature_dim, fingerprint, manifest_path)
        seconds = time.monotonic() - start
        hours = manifest.total_duration / 3600
        logger.info(
            "%s: %d utterances, %.2f h of audio in %.1f s (%.0fx real time) on %s x %d",
            output_dir, len(manifest), hours, seconds, hours * 3600 / max(seconds, 1e-9), device, world_size,
        )  # fmt: skip
    distributed.barrier()
    return FeatureStore(output_dir)


def _extract_shard(manifest, batches, shard_dir: Path, frontend: FrontEnd, device: torch.device,
                   options: ExtractionOptions, show_progress: bool, trim_silence: bool = False) -> None:  # fmt: skip
    """Extract some batches into ``shard_dir``: frames, index, per-batch CMVN partial sums, skips."""
    dim = frontend.feature_dim
    workers = options.num_workers if options.num_workers >= 0 else default_num_workers(device)
    loader = DataLoader(
        WaveformDataset(manifest, frontend.sample_rate, trim_silence),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_waveforms,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    ids, offsets, frame_counts, skipped = [], [], [], []
    partial_sums = np.zeros((len(batches), 1 + 2 * dim), dtype=np.float64)
    notes: Counter = Counter()
    position = 0
    audio_seconds = sum(manifest[i].duration for batch in batches for i in batch)
    progress = tqdm(
        total=round(audio_seconds), unit="s", desc="fbank (audio seconds)", disable=not show_progress
    )
    with progress, open(shard_dir / FRAMES_FILE, "wb") as frames_file:
        for batch_number, batch in enumerate(loader):
            features, counts = frontend.extract(batch.waveforms.to(device), batch.lengths.to(device))
            counts = counts.cpu()
            usable = torch.zeros(len(batch.indices), dtype=torch.bool)
            for row, index in enumerate(batch.indices):
                utterance = manifest[index]
                problem = batch.errors[row] or (
                    ""
                    if counts[row] > 0
                    else f"{manifest.audio_path(utterance)}: shorter than one analysis window"
                )
                if problem:
                    if options.strict:
                        raise FeatureStoreError(f"{problem} (utterance {utterance.id}; --strict)")
                    skipped.append({"id": utterance.id, "error": problem})
                    continue
                usable[row] = True
                if batch.notes[row]:
                    for note in batch.notes[row].split("; "):
                        if notes[note.split(" ")[0]] < 3:
                            logger.info("%s: %s", manifest.audio_path(utterance), note)
                        notes[note.split(" ")[0]] += 1
            # Frames past each utterance's end, and unusable rows (length 0), are exact zeros,
            # so whole-batch sums are sums over the valid frames.
            partial_sums[batch_number, 0] = int(counts[usable].sum())
            partial_sums[batch_number, 1 : 1 + dim] = (
                features.sum(dim=(0, 1), dtype=torch.float64).cpu().numpy()
            )
            partial_sums[batch_number, 1 + dim :] = (
                features.square().sum(dim=(0, 1), dtype=torch.float64).cpu().numpy()
            )
            host = features.to(torch.float16).cpu().numpy()
            for row, index in enumerate(batch.indices):
                if usable[row]:
                    count = int(counts[row])
                    frames_file.write(host[row, :count].tobytes())
                    ids.append(manifest[index].id)
                    offsets.append(position)
                    frame_counts.append(count)
                    position += count
            progress.update(round(sum(manifest[i].duration for i in batch.indices)))
    np.save(shard_dir / "cmvn_partial_sums.npy", partial_sums)
    write_json(shard_dir / INDEX_FILE, {"ids": ids, "offsets": offsets, "frames": frame_counts})
    write_json(shard_dir / "skipped.json", {"skipped": skipped, "notes": dict(notes)})


def _merge_shards(work_dir: Path, world_size: int, output_dir: Path, dim: int,
                  fingerprint: dict, manifest_path: Path) -> None:  # fmt: skip
    """Concatenate the shards in rank order into the final store, atomically."""
    ids, offsets, frame_counts, skipped, notes = [], [], [], [], Counter()
    partial_sums = []
    with atomic_directory(output_dir) as folder:
        with open(folder / FRAMES_FILE, "wb") as merged:
            position = 0
            for rank in range(world_size):
                shard = work_dir / f"rank{rank:04d}"
                index = read_json(shard / INDEX_FILE)
                ids += index["ids"]
                offsets += [offset + position for offset in index["offsets"]]
                frame_counts += index["frames"]
                position += sum(index["frames"])
                if world_size == 1:
                    merged.close()  # one shard: its frames file is the store's, moved not copied
                    os.replace(shard / FRAMES_FILE, folder / FRAMES_FILE)
                else:
                    with open(shard / FRAMES_FILE, "rb") as part:
                        shutil.copyfileobj(part, merged, length=16 << 20)
                extra = read_json(shard / "skipped.json")
                skipped += extra["skipped"]
                notes.update(extra["notes"])
                partial_sums.append(np.load(shard / "cmvn_partial_sums.npy"))
        if not ids:
            raise FeatureStoreError(
                f"{manifest_path}: no usable audio at all ({len(skipped)} file(s) skipped)"
            )
        # Fold the per-batch sums in batch order: the same additions whatever the world size.
        total = np.zeros(1 + 2 * dim, dtype=np.float64)
        for row in np.concatenate(partial_sums):
            total += row
        count = total[0]
        mean = total[1 : 1 + dim] / count
        variance = np.maximum(total[1 + dim :] / count - mean**2, VARIANCE_FLOOR)
        meta = {
            **fingerprint,
            "manifest": str(manifest_path),
            "num_utterances": len(ids),
            "total_frames": int(sum(frame_counts)),
            "feature_dim": dim,
            "dtype": "float16",
            "cmvn": {
                "frames": int(count),
                "mean": mean.tolist(),
                "std": np.sqrt(variance).tolist(),
                "sum": total[1 : 1 + dim].tolist(),
                "sum_squares": total[1 + dim :].tolist(),
            },
            "skipped": skipped,
            "notes": dict(sorted(notes.items())),
        }
        write_json(folder / META_FILE, meta)
        write_json(folder / INDEX_FILE, {"ids": ids, "offsets": offsets, "frames": frame_counts})
        mark_done(folder, fingerprint)
    shutil.rmtree(work_dir, ignore_errors=True)
    if skipped:
        logger.warning("%s: skipped %d unusable file(s):", output_dir, len(skipped))
        for entry in skipped[:20]:
            logger.warning("  %s: %s", entry["id"], entry["error"])
        if len(skipped) > 20:
            logger.warning("  ... and %d more (listed in %s)", len(skipped) - 20, output_dir / META_FILE)
    for note, number in sorted(notes.items()):
        logger.info("%s: %d file(s) %s on the way in", output_dir, number, note)
