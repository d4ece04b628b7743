"""Freeze specs, pretrained-layer learning rates and per-group warm-up (pipeline/students/finetune.py)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from pipeline.core.errors import SlukdError
from pipeline.students.finetune import (
    FreezeSpec,
    PretrainedParts,
    apply_freeze,
    group_lr_lambdas,
    hold_frozen_in_eval,
    new_parameter_groups,
    parameter_groups,
)


class TinyPretrainedStudent(nn.Module):
    """A stand-in with the shape of a pretrained family: stem, embedding, 4 layers, final norm, new head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, 8, 3), nn.Dropout(0.5))
        self.mask_embedding = nn.Parameter(torch.zeros(8))
        self.projection = nn.Linear(8, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)) for _ in range(4))
        self.final_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def parts(self) -> PretrainedParts:
        return PretrainedParts(
            layers=list(self.layers),
            stem=[self.stem],
            embedding=[self.projection, self.mask_embedding],
            top=[self.final_norm],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection(self.stem(x.unsqueeze(1)).transpose(1, 2)) + self.mask_embedding
        for layer in self.layers:
            x = x + layer(x)
        return self.head(self.final_norm(x).mean(dim=1))


def trainable(items) -> list[bool]:
    return [
        all(p.requires_grad for p in (i.parameters() if isinstance(i, nn.Module) else [i])) for i in items
    ]


@pytest.mark.parametrize(
    "text, expected",
    [("encoder", FreezeSpec("encoder")), ("top:2", FreezeSpec("top", 2)), (" TOP:0 ", FreezeSpec("top", 0)),
     ("stem", FreezeSpec("stem")), ("none", FreezeSpec("none"))],
)  # fmt: skip
def test_parse_freeze_spec(text: str, expected: FreezeSpec) -> None:
    spec = FreezeSpec.parse(text)
    assert spec == expected
    assert FreezeSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["top", "top:-1", "top:x", "all", "", "layers:2"])
def test_bad_freeze_spec_is_a_one_line_error(text: str) -> None:
    with pytest.raises(SlukdError, match="freeze must be one of encoder, top:N, stem, none"):
        FreezeSpec.parse(text)


@pytest.mark.parametrize(
    "spec, stem, embedding, layers, top, count",
    [
        ("encoder", False, False, [False] * 4, False, 0),
        ("top:0", False, False, [False] * 4, False, 0),
        ("top:1", False, False, [False, False, False, True], True, 1),
        ("top:3", False, False, [False, True, True, True], True, 3),
        ("top:9", False, True, [True] * 4, True, 4),
        ("stem", False, True, [True] * 4, True, 4),
        ("none", True, True, [True] * 4, True, 4),
    ],
)
def test_apply_freeze(
    spec: str, stem: bool, embedding: bool, layers: list[bool], top: bool, count: int
) -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    assert apply_freeze(parts, spec) == count
    assert trainable(parts.stem) == [stem]
    assert trainable(parts.embedding) == [embedding, embedding]
    assert trainable(parts.layers) == layers
    assert trainable(parts.top) == [top]
    assert model.head.weight.requires_grad  # new parts untouched


def test_freeze_can_be_undone() -> None:
    parts = TinyPretrainedStudent().parts()
    apply_freeze(parts, "encoder")
    apply_freeze(parts, "none")
    assert all(p.requires_grad for p in parts.parameters())


def test_parameter_groups_layer_decay_and_weight_decay() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "top:2")
    groups = parameter_groups([model], parts, lr=1e-3, pretrained_lr=1e-4, layer_decay=0.5, weight_decay=0.01)
    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {
        "new", "new.no_decay", "top.no_decay", "layer_3", "layer_3.no_decay", "layer_2", "layer_2.no_decay"
    }  # fmt: skip
    assert by_name["new"]["lr"] == 1e-3 and not by_name["new"]["pretrained"]
    assert by_name["new"]["params"] == [model.head.weight]
    assert by_name["new.no_decay"]["params"] == [model.head.bias]
    assert by_name["top.no_decay"]["lr"] == pytest.approx(1e-4)
    assert by_name["layer_3"]["lr"] == pytest.approx(1e-4)
    assert by_name["layer_2"]["lr"] == pytest.approx(0.5e-4)
    assert all(group["pretrained"] for name, group in by_name.items() if not name.startswith("new"))
    assert by_name["layer_2"]["weight_decay"] == 0.01
    assert all(group["weight_decay"] == 0.0 for name, group in by_name.items() if name.endswith("no_decay"))
    # frozen parameters are left out; every trainable one is in exactly one group
    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}
    torch.optim.AdamW(groups)  # AdamW accepts the extra keys


def test_weight_decay_none_leaves_the_optimizers_default() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "top:1")
    groups = parameter_groups([model], parts, lr=1e-3, pretrained_lr=1e-4)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.05)
    decays = {group["name"]: group["weight_decay"] for group in optimizer.param_groups}
    assert decays == {"new": 0.05, "new.no_decay": 0.0, "top.no_decay": 0.0, "layer_3": 0.05,
                      "layer_3.no_decay": 0.0}  # fmt: skip


def test_parameter_groups_full_finetuning_reaches_the_stem() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "none")
    groups = parameter_groups([model], parts, lr=1e-3, pretrained_lr=1e-4, layer_decay=0.5)
    by_name = {group["name"]: group for group in groups}
    assert by_name["layer_0"]["lr"] == pytest.approx(1e-4 * 0.5**3)
    assert by_name["stem"]["lr"] == pytest.approx(1e-4 * 0.5**4)
    assert by_name["embedding"]["lr"] == pytest.approx(1e-4 * 0.5**4)
    assert by_name["stem.no_decay"]["params"] == [model.stem[0].bias]
    assert {id(p) for p in by_name["embedding.no_decay"]["params"]} == {
        id(model.projection.bias), id(model.mask_embedding)
    }  # fmt: skip


def test_encoder_frozen_leaves_only_new_groups() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "encoder")
    groups = parameter_groups([model], parts, lr=1e-3, pretrained_lr=1e-4)
    assert [group["name"] for group in groups] == ["new", "new.no_decay"]


def test_new_parameter_groups_for_parts_outside_the_student() -> None:
    projection = nn.Linear(4, 6)
    shared = nn.Linear(2, 2)
    groups = new_parameter_groups(
        [projection, nn.Sequential(projection, shared)], 1e-3, 0.1, exclude=[shared.bias]
    )
    assert [len(group["params"]) for group in groups] == [2, 1]  # no duplicates; excluded bias gone


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0.0}, {"pretrained_lr": -1.0}, {"layer_decay": 0.0}, {"layer_decay": 1.5}]
)
def test_parameter_groups_rejects_bad_rates(kwargs: dict) -> None:
    model = TinyPretrainedStudent()
    settings = {"lr": 1e-3, "pretrained_lr": 1e-4, "layer_decay": 1.0} | kwargs
    with pytest.raises(ValueError):
        parameter_groups([model], model.parts(), **settings)


def test_pretrained_groups_wait_then_warm_up() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "top:1")
    groups = parameter_groups([model], parts, lr=1.0, pretrained_lr=0.1)
    optimizer = torch.optim.SGD(groups)
    lambdas = group_lr_lambdas(groups, lambda step: 1.0, pretrained_freeze_steps=3, pretrained_warmup_steps=4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    pretrained_rates, new_rates = [], []
    for _ in range(9):
        by_name = {group["name"]: group["lr"] for group in optimizer.param_groups}
        pretrained_rates.append(by_name["layer_3"])
        new_rates.append(by_name["new"])
        optimizer.step()
        scheduler.step()
    assert new_rates == [1.0] * 9
    assert pretrained_rates == pytest.approx([0, 0, 0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # the lambdas leave nothing unpicklable behind


def test_frozen_layers_are_held_in_eval_mode() -> None:
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "top:1")
    model.train()
    hold_frozen_in_eval(parts)
    assert not model.stem.training and not model.projection.training
    assert not model.layers[0].training and not model.layers[2].training
    assert model.layers[3].training and model.final_norm.training and model.head.training
    frozen_input = torch.randn(2, 10)
    first = model.layers[2](model.stem(frozen_input.unsqueeze(1)).transpose(1, 2))
    second = model.layers[2](model.stem(frozen_input.unsqueeze(1)).transpose(1, 2))
    assert torch.equal(first, second)  # no dropout in the frozen part


def test_training_only_moves_trainable_parameters() -> None:
    torch.manual_seed(0)
    model = TinyPretrainedStudent()
    parts = model.parts()
    apply_freeze(parts, "top:1")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(
        parameter_groups([model], parts, lr=1e-2, pretrained_lr=1e-2, weight_decay=0.1)
    )
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"layers.3.0.weight", "layers.3.0.bias", "final_norm.weight", "final_norm.bias",
                       "head.weight", "head.bias"}  # fmt: skip
