"""The shared-tensor layout as a building block: LoRTA's attention tensor unchanged, the FFN group as
one ``(d, d_ff, L, M)`` tensor (``shared_ffn``), a user preset in a few lines, clear errors."""
from dataclasses import dataclass
from typing import ClassVar, Sequence

import pytest
import torch

import tenpeft
from helpers import logits, snapshot, train_steps
from models import tiny_batch, tiny_model
from tenpeft import Method, register_method
from tenpeft.methods.shared import SharedTensorConfig, build_shared, shared_formula
from tenpeft.placements import ParallelUpdate

D, D_FF, L = 48, 64, 2
FFN_TYPES = {"bert": ("ffn_in", "ffn_out"), "llama": ("ffn_gate", "ffn_in", "ffn_out")}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_shared_ffn_invariants(family, tmp_path):
    model = tiny_model(family)
    batch = tiny_batch(model)
    base_out = logits(model, batch)
    tenpeft.inject(model, "shared_ffn", rank=3)
    shared = model.tenpeft_shared["ffn"]
    m = len(FFN_TYPES[family])
    assert shared.shape == (D, D_FF, L, m)
    assert torch.equal(logits(model, batch), base_out)  # identity at init

    before, trainable = snapshot(model), {n for n, p in model.named_parameters() if p.requires_grad}
    adapter = {n for n in trainable if n.startswith("tenpeft_shared.ffn.")}
    assert adapter == {f"tenpeft_shared.ffn.factor_{i}" for i in range(4)}
    assert trainable - adapter <= {n for n in trainable if n.startswith(("classifier.", "score."))}  # + the head
    grads = train_steps(model, batch, steps=3)
    assert trainable - (grads[0] | grads[1]) == set()  # every factor learns within two steps
    after = snapshot(model)
    assert {n for n in after if not torch.equal(after[n], before[n])} == trainable  # only adapter params

    report = tenpeft.parameter_report(model)
    assert report.matches_formula, (report.components, report.expected)
    assert report.components["shared_factors"] == 3 * (D + D_FF + L + m)  # CP r (d + d_ff + L + M)

    tenpeft.save_adapter(model, tmp_path)
    fresh = tenpeft.from_pretrained(tiny_model(family), tmp_path)
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6

    adapted = logits(model, batch)
    tenpeft.merge(model)
    assert (logits(model, batch) - adapted).abs().max() <= 1e-5


def test_shared_ffn_slices_follow_the_documented_orientation():
    model = tenpeft.inject(tiny_model("llama"), "shared_ffn", rank=2)
    shared = model.tenpeft_shared["ffn"]
    with torch.no_grad():
        for p in shared.parameters():
            p.normal_()
    full = shared.reconstruct()  # (d, d_ff, L, M), M in gate, in, out order
    layer = model.model.layers[1].mlp
    for index, name in enumerate(("gate_proj", "up_proj", "down_proj")):
        update = getattr(layer, name).updates[0]
        expected = full[:, :, 1, index]
        expected = expected if name == "down_proj" else expected.T  # ffn_out (d x d_ff), the others (d_ff x d)
        assert torch.allclose(update.delta_weight(), expected, atol=1e-5)
        x = torch.randn(3, update.in_features)
        assert torch.allclose(update(x), x @ expected.T, atol=1e-4)


def test_lorta_is_unchanged():
    model = tenpeft.inject(tiny_model("llama"), "lorta", rank=2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"tenpeft_shared.attention.factor_{i}" for i in range(5)}
    assert model.tenpeft_shared["attention"].shape == (48, 12, 4, 2, 4)
    assert tenpeft.parameter_report(model).components["shared_factors"] == 2 * (48 + 12 + 4 + 2 + 4)


@pytest.mark.parametrize("method, roles", [("shared_ffn", ("q", "ffn_in")), ("shared_ffn", ("attn",))])
def test_a_group_mixing_widths_is_refused_at_inject(method, roles):
    model = tiny_model("llama")  # q is 48 wide, k/v 24 (GQA), the FFN 64
    with pytest.raises(tenpeft.TenpeftError, match=r"one shared tensor \(d x n x L x M\) needs one width n"):
        tenpeft.inject(model, method, roles=roles)
    assert not hasattr(model, "tenpeft_state")


@dataclass
class SharedQVConfig(SharedTensorConfig):
    """A user preset: Q and V of every layer as one (d, n, L, 2) Tucker tensor, no head mode."""

    shared_key: ClassVar[str] = "qv"
    roles: Sequence[str] = ("q", "v")
    format: str = "tucker"


@pytest.fixture
def shared_qv():
    register_method(Method("shared_qv", SharedQVConfig, build_shared, shared_formula, "parallel",
                           needs_structure=True))
    yield "shared_qv"
    tenpeft.METHODS.pop("shared_qv")


def test_a_user_preset_in_a_few_lines(shared_qv, tmp_path):
    model = tiny_model("bert")
    batch = tiny_batch(model)
    base_out = logits(model, batch)
    tenpeft.inject(model, shared_qv, rank=2)
    assert model.tenpeft_shared["qv"].shape == (48, 48, 2, 2)
    assert torch.equal(logits(model, batch), base_out)
    train_steps(model, batch, steps=2)
    report = tenpeft.parameter_report(model)
    assert report.matches_formula and report.components["shared_factors"] == 2 ** 4 + 2 * (48 + 48 + 2 + 2)
    for wrapper in (m for m in model.modules() if isinstance(m, ParallelUpdate)):
        x = torch.randn(2, wrapper.in_features)
        with torch.no_grad():
            assert torch.allclose(wrapper(x) - wrapper.base(x), x @ wrapper.delta_weight().T, atol=1e-5)
    tenpeft.save_adapter(model, tmp_path)
    fresh = tenpeft.from_pretrained(tiny_model("bert"), tmp_path)
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6
    with pytest.raises(tenpeft.TenpeftError, match=r"'q': 48, 'v': 24"):  # GQA: K/V narrower than Q
        tenpeft.inject(tiny_model("llama"), shared_qv)
