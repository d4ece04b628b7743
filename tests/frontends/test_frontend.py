"""pipeline.frontends.base: the front-end registry and the fbank + CMVN front-end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.frontends.base import FbankFrontEnd, FrontEndError, build_frontend
from pipeline.frontends.fbank import FbankConfig, FbankExtractor


def waveforms() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 8000, generator=generator) * 0.1
    lengths = torch.tensor([8000, 5000, 300])  # the last is shorter than one window
    batch[1, 5000:] = 0
    batch[2, 300:] = 0
    return batch, lengths


def statistics(dim: int = 80) -> dict:
    return {"mean": list(np.linspace(5.0, 9.0, dim)), "std": list(np.linspace(1.0, 3.0, dim))}


def test_extract_is_the_kaldi_extractor_and_normalize_applies_the_statistics():
    batch, lengths = waveforms()
    frontend = FbankFrontEnd().with_statistics(statistics())
    raw, frames = frontend.extract(batch, lengths)
    reference, counts = FbankExtractor().extract_batch(batch, lengths)
    assert torch.equal(raw, reference) and torch.equal(frames, counts)
    assert torch.equal(frontend.frame_counts(lengths), counts) and counts.tolist()[2] == 0
    features, frames = frontend(batch, lengths)
    mean, std = torch.tensor(statistics()["mean"]).float(), torch.tensor(statistics()["std"]).float()
    valid = torch.arange(raw.shape[1])[None, :] < counts[:, None]
    torch.testing.assert_close(features[valid], ((raw - mean) / std)[valid])
    assert not features[~valid].any()  # padding stays zero after CMVN


def test_config_round_trip_keeps_settings_and_statistics():
    frontend = FbankFrontEnd(FbankConfig(num_mel_bins=40, window="hamming")).with_statistics(statistics(40))
    config = frontend.to_config()
    assert config["name"] == "fbank" and config["num_mel_bins"] == 40 and len(config["cmvn"]["mean"]) == 40
    rebuilt = build_frontend(config)
    assert isinstance(rebuilt, FbankFrontEnd) and rebuilt.to_config() == config and rebuilt.feature_dim == 40
    assert "cmvn" not in frontend.extraction_config()  # what a store depends on: no statistics


def test_missing_and_bad_statistics_and_unknown_names():
    plain = build_frontend({"name": "fbank"})
    assert plain.uses_statistics and plain.missing_statistics()
    features = torch.randn(1, 5, 80)
    assert torch.equal(plain.normalize(features, torch.tensor([5])), features)
    with pytest.raises(FrontEndError, match="no CMVN statistics"):
        plain.graph_module()
    with pytest.raises(FrontEndError, match=r"shape \(40,\), not \(80,\)"):
        build_frontend({"name": "fbank", "cmvn": statistics(40)})
    with pytest.raises(FrontEndError, match="unknown front-end 'mfcc'; known: .*fbank"):
        build_frontend({"name": "mfcc"})
    with pytest.raises(FrontEndError, match="num_bins"):
        build_frontend({"name": "fbank", "num_bins": 80})
