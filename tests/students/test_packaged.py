"""Packaged pretrained models: a model.bin split over wheels, checked and joined into the cache.

The split "wheels" here are real installed-looking distributions the test writes (a module folder
and a ``.dist-info`` with METADATA on ``sys.path``), so the real import, metadata, sha256 and
joining code runs on a tiny CTranslate2 file.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.students.ct2 import CT2Model
from pipeline.students.packaged import (
    CACHE_VARIABLE,
    PACKAGED_MODELS,
    PACKAGED_WHISPER_BASE,
    PackagedModel,
    PackagedPart,
    checked_package,
)
from pipeline.students.pretrained import PretrainedError, load_whisper_encoder, resolve_pretrained
from tests.students.test_ct2 import D_MODEL, LAYERS, whisper_variables, write_ct2

TEST_NAME = "packaged:test-split"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _install(site: Path, distribution: str, version: str, files: dict[str, bytes]) -> None:
    """A distribution as pip leaves it: the module folder and its .dist-info on ``site``."""
    module = site / distribution.replace("-", "_")
    (module / "data").mkdir(parents=True)
    (module / "__init__.py").write_text('"""Model data only."""\n')
    for name, data in files.items():
        (module / name).write_bytes(data)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A tiny Whisper model.bin split over two installed distributions; returns (model, whole bytes)."""
    whole = write_ct2(tmp_path / "whole.bin", whisper_variables()).read_bytes()
    cut = len(whole) // 3
    site = tmp_path / "site"
    _install(site, "slukd-test-split-a", "1.0.0", {
        "data/model.bin.part1": whole[:cut], "data/config.json": b"{}", "data/vocabulary.txt": b"a\nb\n",
    })  # fmt: skip
    _install(site, "slukd-test-split-b", "1.0.0", {"data/model.bin.part2": whole[cut:]})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    model = PackagedModel(
        "slukd-test-split-a", "slukd_test_split_a", "data", "1.0.0", _sha256(whole), "whisper-base",
        parts=(
            PackagedPart("slukd-test-split-a", "slukd_test_split_a", "data/model.bin.part1", _sha256(whole[:cut])),
            PackagedPart("slukd-test-split-b", "slukd_test_split_b", "data/model.bin.part2", _sha256(whole[cut:])),
        ),
    )  # fmt: skip
    monkeypatch.setitem(PACKAGED_MODELS, TEST_NAME, model)
    checked_package.cache_clear()
    yield model, whole
    checked_package.cache_clear()
    for name in ("slukd_test_split_a", "slukd_test_split_b"):
        sys.modules.pop(name, None)


def test_split_model_is_joined_checked_and_loaded(split_model, tmp_path):
    model, whole = split_model
    source = resolve_pretrained(TEST_NAME)
    joined = Path(source.location)
    assert (source.kind, source.spec) == ("ct2", TEST_NAME)
    assert joined.is_relative_to(tmp_path / "cache") and joined.read_bytes() == whole
    assert sorted(p.name for p in joined.parent.iterdir()) == ["config.json", "model.bin", "vocabulary.txt"]
    weights = load_whisper_encoder(TEST_NAME)
    assert (weights.d_model, weights.num_layers, weights.source) == (D_MODEL, LAYERS, TEST_NAME)
    expected = CT2Model(write_ct2(tmp_path / "model.bin", whisper_variables())).float_array(
        "encoder/conv1/weight"
    )
    np.testing.assert_array_equal(weights.state_dict["conv1.weight"].numpy(), expected)


def test_a_damaged_cache_is_rebuilt(split_model):
    model, whole = split_model
    joined = checked_package(model)
    joined.write_bytes(whole[:-1] + b"\x01")
    checked_package.cache_clear()
    assert checked_package(model) == joined and joined.read_bytes() == whole


def test_a_changed_part_is_refused_naming_the_file(split_model, tmp_path):
    model, _ = split_model
    piece = tmp_path / "site/slukd_test_split_b/data/model.bin.part2"
    piece.write_bytes(piece.read_bytes()[:-1] + b"\x07")
    with pytest.raises(PretrainedError, match="is not the pinned") as caught:
        checked_package(model)
    assert str(piece) in caught.value.one_line()
    assert not (tmp_path / "cache/packaged").exists() or not any((tmp_path / "cache/packaged").iterdir())


def test_a_wrong_joined_pin_leaves_no_cache(split_model, tmp_path):
    model, _ = split_model
    wrong = PackagedModel(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(PretrainedError, match="joined parts"):
        checked_package(wrong)
    assert [p.name for p in (tmp_path / "cache/packaged").iterdir()] == []


def test_missing_or_other_version_part_says_what_to_install(split_model):
    model, _ = split_model
    other = PackagedModel(**{**model.__dict__, "version": "2.0.0"})
    with pytest.raises(PretrainedError, match=r"is 1\.0\.0, slukd is pinned to 2\.0\.0"):
        checked_package(other)
    absent = PackagedModel(**{**model.__dict__, "parts": (*model.parts, PackagedPart(
        "slukd-no-such-part", "slukd_no_such_part", "data/model.bin.part3", "0" * 64))})  # fmt: skip
    with pytest.raises(PretrainedError, match=r"slukd\[whisper-base\].*slukd-no-such-part==1\.0\.0"):
        checked_package(absent)


def test_unknown_packaged_name_lists_the_choices():
    with pytest.raises(PretrainedError, match="choose from packaged, packaged:whisper-base"):
        resolve_pretrained("packaged:whisper-huge")


def test_packaged_whisper_base_is_pinned(tmp_path, monkeypatch):
    """The real wheels (when installed): joined, sha256-checked, Whisper base's encoder shape."""
    pytest.importorskip(PACKAGED_WHISPER_BASE.module)
    pytest.importorskip(PACKAGED_WHISPER_BASE.parts[1].module)
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    checked_package.cache_clear()
    try:
        model = CT2Model(checked_package(PACKAGED_WHISPER_BASE))
    finally:
        checked_package.cache_clear()
    assert model.spec == "WhisperSpec"
    assert model.variable("encoder/position_encodings/encodings").shape == (1500, 512)
    assert (
        sum(
            name.startswith("encoder/layer_") and name.endswith("ffn/linear_0/weight")
            for name in model.variables
        )
        == 6
    )
