"""pipeline.training.losses: frame/token alignment, masked hidden and attention losses, the combined loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from pipeline.students.transformer import SpeechStudent, StudentConfig, StudentOutput
from pipeline.training.losses import (
    ALIGNMENTS,
    DistillationLoss,
    DistillConfig,
    TeacherBatch,
    attention_loss,
    hidden_loss,
    interpolation_matrix,
    resolve_slot_losses,
    segment_matrix,
    uniform_layer_map,
)

# A batch mixing more frames than tokens, fewer frames than tokens, and equal counts; the padded
# widths (9 frames, 7 tokens) exceed every row's own length but one.
FRAME_LENGTHS = [9, 4, 6]
TOKEN_LENGTHS = [5, 7, 6]
HIDDEN = 8
GARBAGE = 500.0


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def valid_mask(lengths: list[int] | torch.Tensor, width: int) -> torch.Tensor:
    """``[batch, width]``: True on each row's first ``length`` positions."""
    return torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]


def hidden_states(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    """Random ``[batch, width, HIDDEN]`` states, zero past each row's length."""
    states = torch.randn(len(lengths), width, HIDDEN, generator=seeded(seed))
    return states * valid_mask(lengths, width)[:, :, None]


def attention_maps(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    """Random ``[batch, width, width]`` attention: valid rows are distributions over valid keys,
    padded rows and padded keys hold 0."""
    valid = valid_mask(lengths, width)
    scores = torch.randn(len(lengths), width, width, generator=seeded(seed))
    maps = scores.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)
    return maps * valid[:, :, None]


def uniform_maps(lengths: list[int], width: int) -> torch.Tensor:
    """Every valid row uniform over the valid keys."""
    valid = valid_mask(lengths, width).float()
    return valid[:, :, None] * valid[:, None, :] / valid.sum(-1)[:, None, None]


def with_garbage(
    values: torch.Tensor, lengths: list[int], rows: bool = True, keys: bool = False
) -> torch.Tensor:
    """A copy with large positive values in every padded position (rows: axis 1, keys: axis 2)."""
    values = values.clone()
    noise = torch.rand(values.shape, generator=seeded(99)) * GARBAGE + GARBAGE
    valid = valid_mask(lengths, values.shape[1])
    if rows:
        padded = ~valid
        values[padded] = noise[padded]
    if keys:
        padded_keys = (~valid)[:, None, :].expand_as(values)
        values[padded_keys] = noise[padded_keys]
    return values


def lengths_tensors(frame_lengths: list[int], token_lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(frame_lengths), torch.tensor(token_lengths)


def close(actual: torch.Tensor, expected: torch.Tensor | float) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# uniform_layer_map


@pytest.mark.parametrize(
    ("student_layers", "teacher_layers", "expected"),
    [
        (6, 6, [1, 2, 3, 4, 5, 6]),
        (3, 12, [4, 8, 12]),
        (6, 12, [2, 4, 6, 8, 10, 12]),
        (4, 2, [1, 1, 2, 2]),  # more student than teacher layers: spread evenly, top meets top
        (4, 6, [2, 3, 5, 6]),  # k = 1.5: rounded half up, the top layers meet
        (5, 12, [2, 5, 7, 10, 12]),
        (1, 12, [12]),
    ],
)
def test_uniform_layer_map(student_layers: int, teacher_layers: int, expected: list[int]) -> None:
    assert uniform_layer_map(student_layers, teacher_layers) == expected


# ---------------------------------------------------------------------------------------------
# Alignment matrices


def length_pairs() -> list[tuple[int, int]]:
    return [(frames, tokens) for frames in range(1, 14) for tokens in range(1, 9)]


def test_segment_matrix_assigns_every_valid_frame_to_one_ordered_segment() -> None:
    pairs = length_pairs()
    frame_lengths, token_lengths = lengths_tensors([f for f, _ in pairs], [t for _, t in pairs])
    frames, tokens = 15, 10
    assignment = segment_matrix(frame_lengths, token_lengths, frames, tokens)  # [batch, tokens, frames]
    assert assignment.shape == (len(pairs), tokens, frames)
    assert set(assignment.unique().tolist()) <= {0.0, 1.0}
    frame_valid = valid_mask(frame_lengths, frames)
    per_frame = assignment.sum(1)
    assert torch.equal(per_frame, frame_valid.float())  # valid frames once, padded frames never
    token_valid = valid_mask(token_lengths, tokens)
    assert assignment[~token_valid].sum() == 0  # nothing on padded tokens
    segment_of_frame = assignment.argmax(1)  # [batch, frames]
    for row, (frame_count, token_count) in enumerate(pairs):
        segments = segment_of_frame[row, :frame_count]
        assert (segments[1:] >= segments[:-1]).all(), (frame_count, token_count)  # monotone
        assert segments[0] == 0
        counts = assignment[row].sum(-1)[:token_count]
        if frame_count >= token_count:
            assert (counts >= 1).all(), (frame_count, token_count)
            assert segments[-1] == token_count - 1
            assert counts.max() - counts.min() <= 1  # equal segments up to rounding


def test_interpolation_matrix_resamples_tokens_linearly() -> None:
    pairs = length_pairs()
    frame_lengths, token_lengths = lengths_tensors([f for f, _ in pairs], [t for _, t in pairs])
    frames, tokens = 15, 10
    weights = interpolation_matrix(frame_lengths, token_lengths, frames, tokens)  # [batch, frames, tokens]
    assert weights.shape == (len(pairs), frames, tokens)
    assert (weights >= 0).all()
    frame_valid = valid_mask(frame_lengths, frames)
    token_valid = valid_mask(token_lengths, tokens)
    row_sums = weights.sum(-1)
    close(row_sums[frame_valid], torch.ones(int(frame_valid.sum())))
    assert row_sums[~frame_valid].abs().max() == 0
    assert weights.masked_select(~token_valid[:, None, :]).abs().max() == 0  # never on padded tokens
    for row, (frame_count, token_count) in enumerate(pairs):
        first = torch.zeros(tokens)
        first[0] = 1
        close(weights[row, 0], first)
        if frame_count > 1:
            last = torch.zeros(tokens)
            last[token_count - 1] = 1
            close(weights[row, frame_count - 1], last)
            # the mean token position moves linearly from 0 to token_count - 1
            position = weights[row, :frame_count] @ torch.arange(tokens, dtype=torch.float32)
            expected = torch.arange(frame_count) * (token_count - 1) / (frame_count - 1)
            close(position, expected.float())


# ---------------------------------------------------------------------------------------------
# hidden_loss


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_hidden_loss_ignores_padding(alignment: str) -> None:
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    student = hidden_states(FRAME_LENGTHS, 9, seed=1)
    teacher = hidden_states(TOKEN_LENGTHS, 7, seed=2)
    clean = hidden_loss(student, teacher, frame_lengths, token_lengths, alignment)
    assert clean.shape == ()
    assert torch.isfinite(clean) and clean > 0
    dirty = hidden_loss(
        with_garbage(student, FRAME_LENGTHS),
        with_garbage(teacher, TOKEN_LENGTHS),
        frame_lengths,
        token_lengths,
        alignment,
    )
    close(dirty, clean)
    # extra padding on both axes changes nothing either
    wider_student = with_garbage(functional.pad(student, (0, 0, 0, 5)), FRAME_LENGTHS)
    wider_teacher = with_garbage(functional.pad(teacher, (0, 0, 0, 3)), TOKEN_LENGTHS)
    close(hidden_loss(wider_student, wider_teacher, frame_lengths, token_lengths, alignment), clean)


@pytest.mark.parametrize("alignment", ("interpolate", "segment"))
def test_hidden_loss_is_zero_for_identical_sequences(alignment: str) -> None:
    lengths = [6, 3, 5]
    frame_lengths, token_lengths = lengths_tensors(lengths, lengths)
    states = hidden_states(lengths, 6, seed=3)
    close(hidden_loss(states, states, frame_lengths, token_lengths, alignment), 0.0)
    other = hidden_states(lengths, 6, seed=4)
    assert hidden_loss(other, states, frame_lengths, token_lengths, alignment) > 0.1


def test_hidden_loss_is_zero_for_segment_aligned_student() -> None:
    """Each teacher token repeated over its segment of frames is a perfect student."""
    token_lengths = [3, 4, 2]
    frame_lengths = [9, 8, 8]
    teacher = hidden_states(token_lengths, 4, seed=5)
    assignment = segment_matrix(
        *lengths_tensors(frame_lengths, token_lengths), 9, 4
    )  # [batch, tokens, frames]
    student = assignment.transpose(1, 2) @ teacher
    close(hidden_loss(student, teacher, *lengths_tensors(frame_lengths, token_lengths), "segment"), 0.0)


def test_hidden_loss_is_zero_for_interpolated_student() -> None:
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    teacher = hidden_states(TOKEN_LENGTHS, 7, seed=6)
    student = interpolation_matrix(frame_lengths, token_lengths, 9, 7) @ teacher
    close(hidden_loss(student, teacher, frame_lengths, token_lengths, "interpolate"), 0.0)
    assert hidden_loss(student + 0.5, teacher, frame_lengths, token_lengths, "interpolate") > 0.2


def test_hidden_loss_pad_compares_tokens_then_zeros() -> None:
    """pad: frames 0..T-1 against the tokens, later frames against zeros; tokens past the speech are cut."""
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    teacher = hidden_states(TOKEN_LENGTHS, 7, seed=7)
    student = torch.zeros(3, 9, HIDDEN)
    for row, (frames, tokens) in enumerate(zip(FRAME_LENGTHS, TOKEN_LENGTHS, strict=True)):
        keep = min(frames, tokens)
        student[row, :keep] = teacher[row, :keep]
    close(hidden_loss(student, teacher, frame_lengths, token_lengths, "pad"), 0.0)
    student[0, 7] = 1.0  # a frame past the transcript must be zero
    assert hidden_loss(student, teacher, frame_lengths, token_lengths, "pad") > 0


# ---------------------------------------------------------------------------------------------
# attention_loss


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_attention_loss_ignores_student_padding(alignment: str) -> None:
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    student = attention_maps(FRAME_LENGTHS, 9, seed=1)
    teacher = attention_maps(TOKEN_LENGTHS, 7, seed=2)
    clean = attention_loss(student, teacher, frame_lengths, token_lengths, alignment)
    assert clean.shape == ()
    assert torch.isfinite(clean) and clean > 0
    dirty_student = with_garbage(student, FRAME_LENGTHS, rows=True, keys=True)
    close(attention_loss(dirty_student, teacher, frame_lengths, token_lengths, alignment), clean)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_attention_loss_ignores_padded_teacher_rows(alignment: str) -> None:
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    student = attention_maps(FRAME_LENGTHS, 9, seed=1)
    teacher = attention_maps(TOKEN_LENGTHS, 7, seed=2)
    clean = attention_loss(student, teacher, frame_lengths, token_lengths, alignment)
    dirty_teacher = with_garbage(teacher, TOKEN_LENGTHS, rows=True, keys=False)
    close(attention_loss(student, dirty_teacher, frame_lengths, token_lengths, alignment), clean)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_attention_loss_ignores_padded_teacher_keys(alignment: str) -> None:
    frame_lengths, token_lengths = lengths_tensors(FRAME_LENGTHS, TOKEN_LENGTHS)
    student = attention_maps(FRAME_LENGTHS, 9, seed=1)
    teacher = attention_maps(TOKEN_LENGTHS, 7, seed=2)
    clean = attention_loss(student, teacher, frame_lengths, token_lengths, alignment)
    dirty_teacher = with_garbage(teacher, TOKEN_LENGTHS, rows=True, keys=True)
    close(attention_loss(student, dirty_teacher, frame_lengths, token_lengths, alignment), clean)


def test_pad_attention_loss_does_not_depend_on_batch_width() -> None:
    """A zero-padded student map (as the student returns) in a wider batch scores as when alone."""
    frame_lengths, token_lengths = lengths_tensors([4], [7])
    teacher = attention_maps([7], 7, seed=2)
    alone = attention_maps([4], 4, seed=1)
    in_batch = functional.pad(alone, (0, 5, 0, 5))  # padded to 9 frames by a longer neighbour
    close(
        attention_loss(in_batch, teacher, frame_lengths, token_lengths, "pad"),
        attention_loss(alone, teacher, frame_lengths, token_lengths, "pad"),
    )


@pytest.mark.parametrize("alignment", ("interpolate", "segment"))
def test_attention_loss_is_zero_for_identical_maps(alignment: str) -> None:
    lengths = [6, 3, 5]
    frame_lengths, token_lengths = lengths_tensors(lengths, lengths)
    maps = attention_maps(lengths, 6, seed=3)
    close(attention_loss(maps, maps, frame_lengths, token_lengths, alignment), 0.0)
    other = attention_maps(lengths, 6, seed=4)
    assert attention_loss(other, maps, frame_lengths, token_lengths, alignment) > 0.05


def test_pad_attention_loss_is_zero_for_the_teacher_map_in_the_corner() -> None:
    """pad: frames past the transcript have no target; tokens past the speech are cut and renormalised."""
    teacher = attention_maps([4], 4, seed=5)
    longer = functional.pad(teacher, (0, 3, 0, 3))  # 7 frames, the first 4 attend like the teacher
    longer[0, 4:, :] = attention_maps([7], 7, seed=6)[0, 4:]  # rows past the transcript: anything
    close(attention_loss(longer, teacher, *lengths_tensors([7], [4]), "pad"), 0.0)
    long_teacher = attention_maps([7], 7, seed=7)
    cut = long_teacher[:, :4, :4] / long_teacher[:, :4, :4].sum(-1, keepdim=True)
    close(attention_loss(cut, long_teacher, *lengths_tensors([4], [7]), "pad"), 0.0)
    assert (
        attention_loss(attention_maps([4], 4, seed=8), long_teacher, *lengths_tensors([4], [7]), "pad") > 0.05
    )


@pytest.mark.parametrize("alignment", ("interpolate", "segment"))
def test_attention_loss_compares_probabilities(alignment: str) -> None:
    """Uniform student rows over the frames match uniform teacher rows over the tokens."""
    token_lengths = [4, 3, 5]
    frame_lengths = [12, 9, 10]  # whole multiples: equal segments
    student = uniform_maps(frame_lengths, 12)
    teacher = uniform_maps(token_lengths, 5)
    loss = attention_loss(student, teacher, *lengths_tensors(frame_lengths, token_lengths), alignment)
    assert abs(float(loss)) < 1e-5
    peaked = attention_maps(frame_lengths, 12, seed=9)
    assert attention_loss(peaked, teacher, *lengths_tensors(frame_lengths, token_lengths), alignment) > 0.05


# ---------------------------------------------------------------------------------------------
# DistillationLoss

BATCH, INTENTS, TEACHER_DIM, STUDENT_DIM, FRAMES, TOKENS, VOCAB = 3, 5, 12, 16, 9, 7, 6


def student_output(layers: int = 2, seed: int = 0, projected: bool = True, ctc: bool = True) -> StudentOutput:
    generator = seeded(seed)
    return StudentOutput(
        logits=torch.randn(BATCH, INTENTS, generator=generator).requires_grad_(),
        utterance=torch.randn(BATCH, STUDENT_DIM, generator=generator),
        projected=torch.randn(BATCH, TEACHER_DIM, generator=generator).requires_grad_()
        if projected
        else None,
        lengths=torch.tensor(FRAME_LENGTHS),
        hidden_states=[
            hidden_states(FRAME_LENGTHS, FRAMES, seed=seed + 10 + i)
            @ torch.randn(HIDDEN, STUDENT_DIM, generator=generator)
            for i in range(layers)
        ],
        attentions=[attention_maps(FRAME_LENGTHS, FRAMES, seed=seed + 20 + i) for i in range(layers)],
        ctc_log_probs=torch.randn(BATCH, FRAMES, VOCAB, generator=generator).log_softmax(-1) if ctc else None,
    )


def teacher_batch(layers: int = 2, seed: int = 1) -> TeacherBatch:
    generator = seeded(seed)
    return TeacherBatch(
        logits=torch.randn(BATCH, INTENTS, generator=generator),
        sentence=torch.randn(BATCH, TEACHER_DIM, generator=generator),
        hidden_states=[torch.randn(BATCH, TOKENS, TEACHER_DIM, generator=generator) for _ in range(layers)],
        attentions=[attention_maps(TOKEN_LENGTHS, TOKENS, seed=seed + 30 + i) for i in range(layers)],
        token_lengths=torch.tensor(TOKEN_LENGTHS),
    )


TARGETS = torch.tensor([0, 3, 4])
CTC_TARGETS = torch.tensor([[1, 2, 3, 4], [5, 1, 0, 0], [2, 2, 3, 0]])
CTC_TARGET_LENGTHS = torch.tensor([4, 2, 3])


def make_loss(teacher_dim: int = TEACHER_DIM, **weights) -> DistillationLoss:
    torch.manual_seed(0)
    return DistillationLoss(DistillConfig(**weights), STUDENT_DIM, teacher_dim, uniform_layer_map(2, 4))


@pytest.mark.parametrize("label_smoothing", (0.0, 0.1))
def test_ce_only_equals_cross_entropy(label_smoothing: float) -> None:
    student = student_output()
    result = make_loss(label_smoothing=label_smoothing)(student, TARGETS)
    expected = functional.cross_entropy(student.logits, TARGETS, label_smoothing=label_smoothing)
    assert set(result.terms) == {"ce"}
    close(result.total, expected)
    close(result.terms["ce"], expected)


def test_logits_loss_is_softened_kl_times_squared_temperature() -> None:
    student, teacher = student_output(), teacher_batch()
    temperature = 3.0
    result = make_loss(ce=0, logits=1, temperature=temperature)(student, TARGETS, teacher)
    teacher_probabilities = (teacher.logits / temperature).softmax(-1)
    student_probabilities = (student.logits / temperature).softmax(-1)
    kl = (teacher_probabilities * (teacher_probabilities.log() - student_probabilities.log())).sum(-1).mean()
    assert set(result.terms) == {"logits"}
    close(result.terms["logits"], kl * temperature**2)
    close(result.total, kl * temperature**2)
    same = student._replace(logits=teacher.logits.clone())
    close(make_loss(ce=0, logits=1)(same, TARGETS, teacher).total, 0.0)


def test_sentence_loss_mse_and_cosine() -> None:
    student, teacher = student_output(), teacher_batch()
    mse = make_loss(ce=0, sentence=1)(student, TARGETS, teacher).terms["sentence"]
    close(mse, (student.projected - teacher.sentence).pow(2).mean())
    cosine = make_loss(ce=0, sentence=1, sentence_distance="cosine")(student, TARGETS, teacher).terms[
        "sentence"
    ]
    expected = 1 - (
        (student.projected * teacher.sentence).sum(-1)
        / (student.projected.norm(dim=-1) * teacher.sentence.norm(dim=-1))
    )
    close(cosine, expected.mean())
    scaled = student._replace(projected=teacher.sentence * 3)
    close(make_loss(ce=0, sentence=1, sentence_distance="cosine")(scaled, TARGETS, teacher).total, 0.0)
    with pytest.raises(ValueError, match="projection head"):
        make_loss(ce=0, sentence=1)(student_output(projected=False), TARGETS, teacher)


def test_ctc_loss_is_finite_and_positive() -> None:
    student = student_output()
    result = make_loss(ce=0, ctc=1)(student, TARGETS, None, CTC_TARGETS, CTC_TARGET_LENGTHS)
    assert set(result.terms) == {"ctc"}
    assert torch.isfinite(result.total) and result.total > 0
    expected = functional.ctc_loss(
        student.ctc_log_probs.transpose(0, 1),
        CTC_TARGETS,
        student.lengths,
        CTC_TARGET_LENGTHS,
        zero_infinity=True,
    )
    close(result.total, expected)
    with pytest.raises(ValueError, match="ctc"):
        make_loss(ce=0, ctc=1)(student_output(ctc=False), TARGETS, None, CTC_TARGETS, CTC_TARGET_LENGTHS)


def test_missing_teacher_targets_raise() -> None:
    with pytest.raises(ValueError, match="logits, sentence.*teacher targets"):
        make_loss(logits=1, sentence=1)(student_output(), TARGETS)
    with pytest.raises(ValueError, match="attention"):
        make_loss(attention=1)(student_output(), TARGETS)
    with pytest.raises(ValueError, match="teacher logits"):
        make_loss(logits=1)(student_output(), TARGETS, teacher_batch()._replace(logits=None))
    with pytest.raises(ValueError, match="3 student layers but 2 teacher layers"):
        make_loss(attention=1)(student_output(layers=3), TARGETS, teacher_batch(layers=2))


def test_hidden_loss_needs_teacher_dim() -> None:
    with pytest.raises(ValueError, match="teacher_dim"):
        make_loss(teacher_dim=0, hidden=1)
    assert make_loss(teacher_dim=0).hidden_projection is None
    assert make_loss(hidden=0).hidden_projection is None


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_total_is_the_weighted_sum_of_active_terms(alignment: str) -> None:
    weights = dict(ce=0.5, logits=2.0, sentence=0.25, hidden=3.0, attention=1.5, ctc=0.1)
    loss = make_loss(alignment=alignment, **weights)
    result = loss(student_output(), TARGETS, teacher_batch(), CTC_TARGETS, CTC_TARGET_LENGTHS)
    assert set(result.terms) == set(weights)
    assert all(value.shape == () and torch.isfinite(value) for value in result.terms.values())
    close(result.total, sum(weights[name] * value for name, value in result.terms.items()))
    some = make_loss(alignment=alignment, ce=0, logits=0.5, attention=2.0)
    partial = some(student_output(), TARGETS, teacher_batch())
    assert set(partial.terms) == {"logits", "attention"}
    close(partial.total, 0.5 * partial.terms["logits"] + 2.0 * partial.terms["attention"])


def test_hidden_term_matches_hidden_loss_and_trains_the_projection() -> None:
    loss = make_loss(ce=0, hidden=1, alignment="interpolate")
    student, teacher = student_output(), teacher_batch()
    result = loss(student, TARGETS, teacher)
    expected = torch.stack(
        [
            hidden_loss(loss.hidden_projection(s), t, student.lengths, teacher.token_lengths, "interpolate")
            for s, t in zip(student.hidden_states, teacher.hidden_states, strict=True)
        ]
    ).mean()
    close(result.terms["hidden"], expected)
    result.total.backward()
    for parameter in loss.hidden_projection.parameters():
        assert parameter.grad is not None
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_losses_train_a_real_student() -> None:
    """Every loss on at once, through a tiny SpeechStudent: finite, and the student gets gradients."""
    config = StudentConfig(
        num_mel_bins=16, conv_channels=4, d_model=STUDENT_DIM, num_layers=2, num_heads=2, feedforward=32,
        num_intents=INTENTS, teacher_dim=TEACHER_DIM, ctc_vocab_size=VOCAB,
    )  # fmt: skip
    torch.manual_seed(0)
    model = SpeechStudent(config)
    features = torch.randn(BATCH, 40, 16) * valid_mask([40, 19, 27], 40)[:, :, None]
    output = model(features, torch.tensor([40, 19, 27]), return_layers=True)
    frames = int(output.lengths.max())
    teacher = teacher_batch()
    loss = make_loss(ce=1, logits=1, sentence=1, hidden=1, attention=1, ctc=1)
    result = loss(output, TARGETS, teacher, CTC_TARGETS, CTC_TARGET_LENGTHS)
    assert frames == output.hidden_states[0].shape[1]
    assert all(torch.isfinite(value) for value in result.terms.values())
    result.total.backward()
    assert model.classifier.weight.grad is not None
    assert model.layers[0].qkv.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# DistillConfig


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"alignment": "dtw"}, "alignment must be one of pad, interpolate, segment"),
        ({"sentence_distance": "l1"}, "sentence_distance must be one of mse, cosine"),
        ({"hidden": -1.0}, "loss weights must be >= 0"),
        ({"ce": -0.1}, "loss weights must be >= 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -2.0}, "temperature must be > 0"),
    ],
)
def test_config_validation(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistillConfig(**settings)


def test_config_switches() -> None:
    config = DistillConfig(ce=0, logits=1, hidden=0.5)
    assert config.active() == ["logits", "hidden"]
    assert config.needs_layers and config.needs_teacher
    plain = DistillConfig()
    assert plain.active() == ["ce"]
    assert not plain.needs_layers and not plain.needs_teacher


# ---------------------------------------------------------------------------------------------
# Slot heads: CE with the gold slot classes, KD to the teacher's slot heads


def test_slot_losses_sum_over_the_heads() -> None:
    generator = seeded(5)
    heads = {
        "size": torch.randn(BATCH, 4, generator=generator),
        "roast": torch.randn(BATCH, 3, generator=generator),
    }
    teacher_heads = {
        name: torch.randn(BATCH, values.shape[1], generator=generator) for name, values in heads.items()
    }
    gold = torch.tensor([[0, 2], [3, 1], [1, 0]])  # [batch, slots] in head order
    student = student_output()._replace(slot_logits=heads)
    teacher = teacher_batch()._replace(slot_logits=teacher_heads)
    loss = make_loss(ce=1.0, slot_ce=0.5, slot_logits=2.0, temperature=3.0)
    terms = loss(student, TARGETS, teacher, slot_targets=gold).terms
    expected_ce = sum(functional.cross_entropy(heads[name], gold[:, i]) for i, name in enumerate(heads))
    assert float(terms["slot_ce"]) == pytest.approx(float(expected_ce), rel=1e-5)
    expected_kd = sum(
        9.0 * functional.kl_div((heads[name] / 3).log_softmax(-1), (teacher_heads[name] / 3).softmax(-1),
                                reduction="batchmean")
        for name in heads
    )  # fmt: skip
    assert float(terms["slot_logits"]) == pytest.approx(float(expected_kd), rel=1e-5)
    total = loss(student, TARGETS, teacher, slot_targets=gold).total
    assert float(total) == pytest.approx(
        float(terms["ce"] + 0.5 * terms["slot_ce"] + 2.0 * terms["slot_logits"])
    )
    # a student without slot heads has no slot terms whatever the weights
    assert set(loss(student_output(), TARGETS, teacher).terms) == {"ce"}
    with pytest.raises(ValueError, match="teacher's slot logits for size, roast"):
        loss(student, TARGETS, teacher_batch(), slot_targets=gold)


def test_slot_weights_resolve_from_the_labels_and_the_teacher() -> None:
    config = DistillConfig(logits=0.7)
    assert config.active() == ["ce", "logits"]  # unresolved: no slot terms yet
    off = resolve_slot_losses(config, has_slots=False, teacher_slot_logits=True)
    assert (off.slot_ce, off.slot_logits) == (0.0, 0.0) and off.active() == ["ce", "logits"]
    on = resolve_slot_losses(config, has_slots=True, teacher_slot_logits=True)
    assert (on.slot_ce, on.slot_logits) == (1.0, 0.7)  # KD on the slot heads at the logits weight
    assert resolve_slot_losses(config, True, teacher_slot_logits=False).slot_logits == 0.0
    assert resolve_slot_losses(DistillConfig(), True, True).slot_logits == 0.0  # no KD: no slot KD
    explicit = resolve_slot_losses(DistillConfig(logits=1, slot_ce=0, slot_logits=0.2), True, True)
    assert (explicit.slot_ce, explicit.slot_logits) == (0, 0.2)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        DistillConfig(slot_logits=-1.0)


def test_a_student_without_slots_keeps_its_weights_and_numbers() -> None:
    """Slot heads are built last: the other weights draw the same values, and no slot weight exists
    without slots, so a model of a slot-less label map is what it was before slot heads."""
    from pipeline.students.registry import build_student

    settings = {"d_model": 16, "num_layers": 1, "num_heads": 2, "feedforward": 32, "conv_channels": 4,
                "num_intents": 5, "num_mel_bins": 20}  # fmt: skip
    torch.manual_seed(0)
    plain = build_student("transformer", settings).eval()
    torch.manual_seed(0)
    slotted = build_student("transformer", {**settings, "slot_classes": {"size": 3, "roast": 4}}).eval()
    plain_state, slotted_state = plain.state_dict(), slotted.state_dict()
    assert not [key for key in plain_state if "slot" in key]
    assert sorted(set(slotted_state) - set(plain_state)) == [
        f"slot_heads.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")
    ]
    assert all(torch.equal(plain_state[key], slotted_state[key]) for key in plain_state)
    features, lengths = torch.randn(2, 40, 20), torch.tensor([40, 31])
    first, second = plain(features, lengths), slotted(features, lengths)
    assert first.slot_logits == {} and torch.equal(first.logits, second.logits)
    assert {name: tuple(v.shape) for name, v in second.slot_logits.items()} == {
        "size": (2, 3),
        "roast": (2, 4),
    }
    with pytest.raises(Exception, match="slot 'size' needs at least 2 classes"):
        build_student("transformer", {**settings, "slot_classes": {"size": 1}})
