"""pipeline.serving.rejection: the scores, the calibrated threshold, the saved section, the reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.data.labels import LabelSet
from pipeline.data.vad import DEFAULT_VAD
from pipeline.scoring.commands import CommandDecoders
from pipeline.serving.rejection import (
    LOW_CONFIDENCE,
    NOT_A_COMMAND,
    Rejection,
    RejectionError,
    calibrate_threshold,
    check_method,
    rejection_from_config,
    rejection_from_metadata,
    rejection_metadata,
    rejection_scores,
    resolve_rejection,
)

LABELS = LabelSet(["lights_on", "lights_off", "unknown"])
PLAIN = LabelSet(["lights_on", "lights_off", "music"])


def test_scores_of_each_method():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    probabilities = torch.softmax(torch.tensor(logits), dim=1).numpy()
    assert rejection_scores(logits, "max_softmax", LABELS) == pytest.approx(probabilities.max(1))
    assert rejection_scores(logits, "unknown", LABELS) == pytest.approx(1 - probabilities[:, 2])
    for temperature in (1.0, 2.5):
        energy = temperature * torch.logsumexp(torch.tensor(logits) / temperature, dim=1).numpy()
        assert rejection_scores(logits, "energy", LABELS, temperature) == pytest.approx(energy)
    assert check_method("auto", LABELS) == "energy" and check_method("auto", PLAIN) == "energy"
    with pytest.raises(RejectionError, match="needs an 'unknown' intent"):
        rejection_scores(logits, "unknown", PLAIN)
    with pytest.raises(RejectionError, match="choose from auto, max_softmax, energy, unknown, command"):
        check_method("entropy", PLAIN)


ORDER = LabelSet(["orderPizza"], slots={"size": ["small", "large"], "crust": ["thin", "thick"]})


def test_the_command_score_is_the_only_one_with_one_intent():
    logits = np.zeros((2, 1))  # one intent: its probability is always 1
    slots = {
        "size": np.log([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]]),
        "crust": np.log([[0.1, 0.8, 0.1], [0.5, 0.1, 0.4]]),
    }
    assert check_method("auto", ORDER) == "command"  # energy and max-softmax are constant here
    assert rejection_scores(logits, "energy", ORDER).tolist() == [0.0, 0.0]
    # log p(intent) + log p(each decoded slot value): 0 + log 0.9 + log 0.8, 0 + log 0.4 + log 0.5
    assert rejection_scores(logits, "command", ORDER, slot_logits=slots) == pytest.approx(
        [np.log(0.9 * 0.8), np.log(0.4 * 0.5)]
    )
    rejection = Rejection(method="command", threshold=float(np.log(0.5)))
    decoders = CommandDecoders(ORDER)  # the answer's own decoded command carries the score
    assert rejection.reason(logits[0], ORDER, decoders.row(logits, slots, 0)) is None
    assert rejection.reason(logits[1], ORDER, decoders.row(logits, slots, 1)) == LOW_CONFIDENCE
    with pytest.raises(RejectionError, match="needs the model's slot logits"):
        rejection_scores(logits, "command", ORDER)
    with pytest.raises(RejectionError, match="needs slots in the labels"):
        check_method("command", PLAIN)


@pytest.mark.parametrize("count", [7, 50, 400])
@pytest.mark.parametrize("target", [0.5, 0.9, 0.98, 1.0])
def test_threshold_accepts_exactly_the_target_share(count, target):
    scores = np.random.default_rng(count).normal(size=count)
    threshold = calibrate_threshold(scores, target)
    accepted = int((scores >= threshold).sum())
    assert accepted == int(np.ceil(round(target * count, 9)))  # the smallest count reaching the target
    assert accepted / count >= target


def test_threshold_with_ties_and_early_rejections():
    assert calibrate_threshold([0.9, 0.9, 0.9, 0.1], 0.5) == 0.9  # ties: all three are accepted
    # two of four are rejected before any threshold: 50% is the most that can be accepted
    scores = np.array([0.8, 0.6, -np.inf, -np.inf])
    assert calibrate_threshold(scores, 0.5) == 0.6
    assert calibrate_threshold(scores, 0.75) == -np.inf
    for bad, message in (([], "no in-domain scores"), ([0.1, np.nan], "NaN")):
        with pytest.raises(RejectionError, match=message):
            calibrate_threshold(bad)
    with pytest.raises(RejectionError, match=r"target acceptance must be in \(0, 1\]"):
        calibrate_threshold([0.5], 1.5)


def test_reasons_in_order():
    rejection = Rejection(method="max_softmax", threshold=0.6)
    assert rejection.reason(np.array([3.0, 0.0, 0.0]), LABELS) is None
    assert rejection.reason(np.array([0.0, 0.0, 3.0]), LABELS) == NOT_A_COMMAND  # the unknown class won
    assert rejection.reason(np.array([0.3, 0.0, 0.0]), LABELS) == LOW_CONFIDENCE
    assert Rejection(threshold=None).reason(np.array([0.3, 0.0, 0.0]), LABELS) is None


def test_section_round_trip_config_and_onnx_metadata():
    rejection = Rejection(method="energy", threshold=-np.inf, temperature=2.0, calibration={"split": "valid"})
    saved = json.loads(json.dumps(rejection.to_dict()))  # JSON has no -inf
    loaded = Rejection.from_dict(saved)
    assert loaded.method == "energy" and loaded.threshold < -1e29 and loaded.vad_config == DEFAULT_VAD
    config = {"rejection": saved, "trim_silence": True}
    assert rejection_from_config(config, "m") == (loaded, True)
    assert rejection_from_metadata(rejection_metadata(config), "m.onnx") == (loaded, True)
    assert rejection_from_config({}, "old") == (None, False)  # a dir from before: neither
    assert rejection_from_metadata({}, "old.onnx") == (None, False)
    assert Rejection.from_dict({"vad": None}).vad_config is None
    for bad, message in (
        ({"method": "nope"}, "unknown rejection method"),
        ({"threshold": 0.5, "colour": 1}, "unexpected keyword"),
        ({"vad": {"margin": 3}}, "unknown setting"),
        ([1, 2], "expected a JSON object"),
    ):
        with pytest.raises(RejectionError, match=message) as error:
            rejection_from_config({"rejection": bad}, "exp/m")
        assert str(error.value).startswith("exp/m: rejection")
    with pytest.raises(RejectionError, match="m.onnx: metadata slukd_rejection is not JSON"):
        rejection_from_metadata({"slukd_rejection": "{"}, "m.onnx")


def test_resolve_threshold_choices():
    stored = Rejection(method="energy", threshold=4.0, vad=None)
    assert resolve_rejection(stored, "auto", PLAIN) is stored
    assert resolve_rejection(None, "auto", PLAIN) is None  # nothing stored: no rejection, as before
    assert resolve_rejection(stored, None, PLAIN) is None
    overridden = resolve_rejection(stored, "2.5", PLAIN)
    assert (overridden.method, overridden.threshold, overridden.vad) == ("energy", 2.5, None)
    fresh = resolve_rejection(None, 0.7, LABELS)
    assert (fresh.method, fresh.threshold, fresh.vad_config) == ("max_softmax", 0.7, DEFAULT_VAD)
    with pytest.raises(RejectionError, match="'auto' or a number"):
        resolve_rejection(stored, "high", PLAIN)
