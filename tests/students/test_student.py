"""pipeline.students.transformer: shapes, subsampling arithmetic, padding invariance, layer outputs, heads."""

from __future__ import annotations

import pytest
import torch

from pipeline.students.transformer import (
    POOLINGS,
    SpeechStudent,
    StudentConfig,
    min_input_frames,
    subsampled_lengths,
)

MEL_BINS = 16
NUM_INTENTS = 5
SUBSAMPLINGS = (4, 8)


def make_config(**overrides) -> StudentConfig:
    """A tiny student: 2 layers of width 32, 16 mel bins."""
    settings = dict(
        num_mel_bins=MEL_BINS,
        subsampling=4,
        conv_channels=8,
        d_model=32,
        num_layers=2,
        num_heads=4,
        feedforward=64,
        dropout=0.1,
        pooling="mean",
        num_intents=NUM_INTENTS,
    )
    settings.update(overrides)
    return StudentConfig(**settings)


def make_student(**overrides) -> SpeechStudent:
    torch.manual_seed(0)
    return SpeechStudent(make_config(**overrides)).eval()


def utterances(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(length, MEL_BINS, generator=generator) for length in lengths]


def pad_batch(
    items: list[torch.Tensor], garbage: bool = False, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack utterances into ``[batch, frames, bins]``; the padding is zeros or large random values."""
    lengths = torch.tensor([len(item) for item in items])
    frames = int(lengths.max())
    if garbage:
        generator = torch.Generator().manual_seed(seed)
        features = torch.rand(len(items), frames, MEL_BINS, generator=generator) * 200 + 50
    else:
        features = torch.zeros(len(items), frames, MEL_BINS)
    for row, item in enumerate(items):
        features[row, : len(item)] = item
    return features, lengths


def lengths_for(subsampling: int) -> list[int]:
    """Unequal lengths, all at least ``min_input_frames``: the longest row sets the padded width."""
    shortest = min_input_frames(subsampling)
    return [41, shortest + 9, shortest, 26]


# ---------------------------------------------------------------------------------------------
# Shapes and subsampling arithmetic


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shapes(pooling: str, subsampling: int) -> None:
    student = make_student(pooling=pooling, subsampling=subsampling, teacher_dim=24, ctc_vocab_size=7)
    input_lengths = lengths_for(subsampling)
    features, lengths = pad_batch(utterances(input_lengths))
    output = student(features, lengths, return_layers=True)
    batch = len(input_lengths)
    frames = int(subsampled_lengths(torch.tensor(max(input_lengths)), subsampling))

    assert output.logits.shape == (batch, NUM_INTENTS)
    assert output.utterance.shape == (batch, 32)
    assert output.projected.shape == (batch, 24)
    assert torch.equal(output.lengths, subsampled_lengths(lengths, subsampling))
    assert int(output.lengths.max()) == frames
    assert len(output.hidden_states) == len(output.attentions) == 2
    assert all(hidden.shape == (batch, frames, 32) for hidden in output.hidden_states)
    assert all(attention.shape == (batch, frames, frames) for attention in output.attentions)
    assert output.ctc_log_probs.shape == (batch, frames, 7)


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_subsampled_lengths_match_encoder_frames(subsampling: int) -> None:
    student = make_student(subsampling=subsampling)
    shortest = min_input_frames(subsampling)
    with torch.no_grad():
        for length in range(shortest, shortest + 24):
            features = torch.randn(1, length, MEL_BINS)
            encoded, reported = student.subsampling(features, torch.tensor([length]))
            expected = subsampled_lengths(torch.tensor([length]), subsampling)
            assert encoded.shape[1] == int(expected[0]) == int(reported[0]), length
        for length in (shortest, shortest + 5, 50):
            output = student(torch.randn(1, length, MEL_BINS), torch.tensor([length]), return_layers=True)
            assert output.hidden_states[-1].shape[1] == int(output.lengths[0])
            assert int(output.lengths[0]) == int(subsampled_lengths(torch.tensor(length), subsampling))


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_min_input_frames_is_the_shortest_input_with_one_frame(subsampling: int) -> None:
    shortest = min_input_frames(subsampling)
    assert shortest == {4: 7, 8: 15}[subsampling]
    assert int(subsampled_lengths(torch.tensor(shortest), subsampling)) == 1
    assert int(subsampled_lengths(torch.tensor(shortest - 1), subsampling)) == 0
    all_lengths = torch.arange(0, 200)
    frames = subsampled_lengths(all_lengths, subsampling)
    assert torch.equal(frames >= 1, all_lengths >= shortest)
    assert (frames >= 0).all()
    assert (frames[1:] >= frames[:-1]).all()  # monotone in the input length


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_very_short_input_still_yields_one_frame(pooling: str, subsampling: int) -> None:
    student = make_student(pooling=pooling, subsampling=subsampling, ctc_vocab_size=5)
    output = student(torch.randn(1, 2, MEL_BINS), torch.tensor([2]), return_layers=True)
    assert output.lengths.tolist() == [1]
    assert output.hidden_states[0].shape[1] == 1
    assert output.ctc_log_probs.shape == (1, 1, 5)
    assert torch.isfinite(output.logits).all()
    # inside a zero-padded batch with a longer utterance: the same as alone (the short row is
    # read on past its length into the zero padding, so that padding must be zeros)
    items = utterances([2, 40])
    with torch.no_grad():
        batched = student(*pad_batch(items))
        alone = student(items[0][None], torch.tensor([2]))
    assert batched.lengths[0] == 1
    torch.testing.assert_close(batched.logits[0], alone.logits[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Padding invariance


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_logits_do_not_depend_on_padding(pooling: str, subsampling: int) -> None:
    student = make_student(pooling=pooling, subsampling=subsampling, teacher_dim=12)
    items = utterances(lengths_for(subsampling))
    with torch.no_grad():
        alone = [student(item[None], torch.tensor([len(item)])) for item in items]
        zero_padded = student(*pad_batch(items))
        garbage_padded = student(*pad_batch(items, garbage=True))
    for row, single in enumerate(alone):
        torch.testing.assert_close(zero_padded.logits[row], single.logits[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(zero_padded.projected[row], single.projected[0], atol=1e-5, rtol=0)
        assert zero_padded.lengths[row] == single.lengths[0]
    torch.testing.assert_close(garbage_padded.logits, zero_padded.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(garbage_padded.projected, zero_padded.projected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_valid_hidden_states_do_not_depend_on_padding(pooling: str) -> None:
    student = make_student(pooling=pooling)
    items = utterances(lengths_for(4))
    with torch.no_grad():
        batched = student(*pad_batch(items, garbage=True), return_layers=True)
        for row, item in enumerate(items):
            single = student(item[None], torch.tensor([len(item)]), return_layers=True)
            frames = int(single.lengths[0])
            for layer in range(2):
                torch.testing.assert_close(
                    batched.hidden_states[layer][row, :frames],
                    single.hidden_states[layer][0],
                    atol=1e-5,
                    rtol=0,
                )
                torch.testing.assert_close(
                    batched.attentions[layer][row, :frames, :frames],
                    single.attentions[layer][0],
                    atol=1e-5,
                    rtol=0,
                )


# ---------------------------------------------------------------------------------------------
# Layer outputs


@pytest.mark.parametrize("pooling", POOLINGS)
def test_return_layers_gives_hidden_states_and_attention_distributions(pooling: str) -> None:
    student = make_student(pooling=pooling, num_layers=3)
    features, lengths = pad_batch(utterances(lengths_for(4)))
    with torch.no_grad():
        output = student(features, lengths, return_layers=True)
        plain = student(features, lengths)
    batch, frames = len(lengths), int(output.lengths.max())
    assert len(output.hidden_states) == len(output.attentions) == 3
    valid = torch.arange(frames)[None, :] < output.lengths[:, None]  # [batch, frames]
    for hidden, attention in zip(output.hidden_states, output.attentions, strict=True):
        assert hidden.shape == (batch, frames, 32)
        assert attention.shape == (batch, frames, frames)
        assert (attention >= 0).all()
        row_sums = attention.sum(-1)
        torch.testing.assert_close(row_sums[valid], torch.ones(int(valid.sum())), atol=1e-5, rtol=0)
        padded_keys = (valid[:, :, None] & ~valid[:, None, :]).expand(batch, frames, frames)
        assert padded_keys.any()
        assert attention[padded_keys].abs().max() == 0
    assert plain.hidden_states == [] and plain.attentions == []
    torch.testing.assert_close(plain.logits, output.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.utterance, output.utterance, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Heads


def test_projection_head_only_with_teacher_dim() -> None:
    features, lengths = pad_batch(utterances([20, 12]))
    without = make_student(teacher_dim=0)
    assert without.projection is None
    assert without(features, lengths).projected is None
    with_head = make_student(teacher_dim=48)
    assert with_head.projection.in_features == 32
    assert with_head.projection.out_features == 48
    assert with_head(features, lengths).projected.shape == (2, 48)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_ctc_head_gives_normalised_log_probabilities(pooling: str) -> None:
    features, lengths = pad_batch(utterances([30, 12]))
    assert make_student(pooling=pooling).ctc_head is None
    assert make_student(pooling=pooling)(features, lengths).ctc_log_probs is None
    student = make_student(pooling=pooling, ctc_vocab_size=9)
    with torch.no_grad():
        output = student(features, lengths)
    assert output.ctc_log_probs.shape == (2, int(output.lengths.max()), 9)
    assert output.ctc_log_probs.dtype == torch.float32
    torch.testing.assert_close(
        output.ctc_log_probs.logsumexp(-1), torch.zeros(output.ctc_log_probs.shape[:2]), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------------------------------------
# Configuration and training


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subsampling": 3}, "subsampling must be 4 or 8"),
        ({"pooling": "max"}, "pooling must be one of mean, attention, cls"),
        ({"d_model": 30, "num_heads": 4}, "not divisible by num_heads"),
        ({"num_intents": -1}, "num_intents"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_one_intent_with_slots() -> None:
    # A grammar of one intent (a coffee order: every difference is in the slots) is a valid student
    student = make_student(num_intents=1, slot_classes={"size": 4, "drink": 3}).train()
    features, lengths = pad_batch(utterances([30, 19, 11]))
    output = student(features, lengths)
    assert output.logits.shape == (3, 1)
    assert {name: tuple(v.shape) for name, v in output.slot_logits.items()} == {
        "size": (3, 4),
        "drink": (3, 3),
    }
    loss = sum(
        torch.nn.functional.cross_entropy(output.slot_logits[name], torch.tensor(target))
        for name, target in (("size", [0, 3, 1]), ("drink", [2, 0, 1]))
    )
    loss.backward()
    assert student.slot_heads[0].weight.grad.abs().sum() > 0


def test_gradients_reach_every_parameter() -> None:
    student = make_student(pooling="mean").train()
    features, lengths = pad_batch(utterances([30, 19, 11]))
    output = student(features, lengths)
    loss = torch.nn.functional.cross_entropy(output.logits, torch.tensor([0, 3, 4]))
    loss.backward()
    for name, parameter in student.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert student.num_parameters() == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_family_interface(subsampling: int) -> None:
    """What training, inference and export use instead of the student's internals."""
    from pipeline.frontends.base import build_frontend
    from pipeline.students.registry import build_student, student_class

    assert student_class("transformer") is SpeechStudent and SpeechStudent.config_class is StudentConfig
    student = build_student(
        "transformer", {**vars(make_config(subsampling=subsampling)), "ctc_vocab_size": 9}
    )
    assert student.num_layers == 2 and student.hidden_size == 32 and student.has_ctc
    assert build_frontend(student.default_frontend()).feature_dim == MEL_BINS
    lengths = torch.tensor([1, min_input_frames(subsampling), 100, 333])
    output = student.eval()(torch.randn(4, 333, MEL_BINS), lengths)
    assert torch.equal(student.output_lengths(lengths), output.lengths)
    groups = student.parameter_groups(1e-3, 1e-4, 0.9)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    assert sum(p.numel() for p in groups[0]["params"]) == student.num_parameters()


def test_registry_errors() -> None:
    from pipeline.students.registry import FAMILY_MODULES, StudentError, build_student

    with pytest.raises(StudentError, match="unknown student family 'rnn'; known: .*transformer"):
        build_student("rnn", {})
    with pytest.raises(StudentError, match="student \\(transformer\\): .*d_modl"):
        build_student("transformer", {"d_modl": 3})
    assert {"whisper", "hf"} <= set(FAMILY_MODULES)


def test_each_slot_pools_with_its_own_attention() -> None:
    """With attention pooling every slot head reads the frames through its own scorer: changing
    one slot's scorer moves that slot's logits only; with mean pooling the slots share the mean."""
    slots = {"size": 3, "roast": 4}
    student = make_student(pooling="attention", slot_classes=slots)
    assert student.slot_scorers is not None and len(student.slot_scorers) == 2
    features, lengths = pad_batch(utterances([40, 28]))
    before = student(features, lengths)
    assert {name: tuple(value.shape) for name, value in before.slot_logits.items()} == {
        "size": (2, 3), "roast": (2, 4)}  # fmt: skip
    with torch.no_grad():
        student.slot_scorers[0][0].weight.add_(torch.randn_like(student.slot_scorers[0][0].weight))
    after = student(features, lengths)
    assert not torch.allclose(before.slot_logits["size"], after.slot_logits["size"])
    assert torch.allclose(before.slot_logits["roast"], after.slot_logits["roast"])
    assert torch.allclose(before.logits, after.logits)
    assert make_student(pooling="mean", slot_classes=slots).slot_scorers is None
