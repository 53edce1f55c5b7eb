"""Tensorized per-matrix updates: ``lora`` with ``shapes={"OUTxIN": [...]}`` views ``ΔW`` as a tensor,
so any format drops in; a Kronecker format written as a user would (factors carrying several modes,
no bond; the core's own is ``kron``) gives ``ΔW = A ⊗ B``. Also the network contract check every format passes at construction."""
import json

import pytest
import torch

import tenpeft
from tenpeft.state import CONFIG_NAME
from helpers import logits, snapshot, train_steps
from models import tiny_batch, tiny_model
from tenpeft.formats import Factorization, register_format
from tenpeft.placements import ParallelUpdate


class Kronecker(Factorization):
    """``T (o_1, o_2, i_1, i_2)`` with ``T[a, c, b, e] = A[a, b] B[c, e]``: the row-major view of
    ``ΔW = A ⊗ B``, ``A (o_1 x i_1)``, ``B (o_2 x i_2)``; params ``o_1 i_1 + o_2 i_2``; ``B`` zero at init."""

    format_name = "user_kron"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        if len(shape) != 4:
            raise tenpeft.TenpeftError(f"user_kron needs a 4-way shape (o_1, o_2, i_1, i_2), got {list(shape)}")
        return (1,)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        return {"a": (o1, i1), "b": (o2, i2)}

    @classmethod
    def network(cls, shape, ranks):
        return [("a", (0, 2)), ("b", (1, 3))]

    @classmethod
    def count(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        return o1 * i1 + o2 * i2

    @classmethod
    def summed_terms(cls, ranks):
        return 1

    @classmethod
    def default_zero_factor(cls, shape):
        return "b"


@pytest.fixture(autouse=True)
def kron():
    register_format("user_kron", Kronecker)
    yield
    tenpeft.FORMATS.pop("user_kron")


SHAPES = {"bert": {"48x48": [4, 12, 4, 12]}, "llama": {"48x48": [4, 12, 4, 12], "24x48": [4, 6, 4, 12]}}
# o_1 i_1 + o_2 i_2 per target, 2 layers: bert q, v 48x48; llama q 48x48, v 24x48 (GQA)
KRON_COUNT = {"bert": 2 * 2 * (4 * 4 + 12 * 12), "llama": 2 * (4 * 4 + 12 * 12) + 2 * (4 * 4 + 6 * 12)}


def _nonzero(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    return model


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_kronecker_lora_invariants(family, tmp_path):
    model = tiny_model(family)
    batch = tiny_batch(model)
    base_out = logits(model, batch)
    tenpeft.inject(model, "lora", format="user_kron", shapes=SHAPES[family], scale=2.0)
    assert torch.equal(logits(model, batch), base_out)  # identity at init: B = 0

    before, trainable = snapshot(model), {n for n, p in model.named_parameters() if p.requires_grad}
    factors = {n for n in trainable if n.endswith((".factorization.a", ".factorization.b"))}
    assert len(factors) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    grads = train_steps(model, batch, steps=3)
    assert factors - (grads[0] | grads[1]) == set()
    after = snapshot(model)
    assert {n for n in after if not torch.equal(after[n], before[n])} == trainable

    report = tenpeft.parameter_report(model)
    assert report.matches_formula and report.components["factors"] == KRON_COUNT[family]

    tenpeft.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["hyperparameters"]["shapes"] == SHAPES[family]
    fresh = tenpeft.from_pretrained(tiny_model(family), tmp_path)
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6

    adapted = logits(model, batch)
    tenpeft.merge(model)
    assert (logits(model, batch) - adapted).abs().max() <= 1e-5


def test_kronecker_delta_weight_is_torch_kron():
    model = _nonzero(tenpeft.inject(tiny_model("llama"), "lora", format="user_kron", shapes=SHAPES["llama"], scale=0.5))
    wrappers = [m for m in model.modules() if isinstance(m, ParallelUpdate)]
    for wrapper in wrappers:
        update = wrapper.updates[0]
        a, b = update.factorization.a, update.factorization.b
        expected = 0.5 * torch.kron(a, b)
        assert expected.shape == (update.out_features, update.in_features)
        assert torch.allclose(update.delta_weight(), expected, atol=1e-6, rtol=1e-5)
        x = torch.randn(2, 3, update.in_features)
        with torch.no_grad():
            assert torch.allclose(update(x), x @ expected.T, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("fmt, rank, count", [("tt", 2, 4 * 2 + 2 * 12 * 2 + 2 * 4 * 2 + 2 * 12),
                                              ("tucker", 2, 2 ** 4 + 2 * (4 + 12 + 4 + 12)),
                                              ("cp", 3, 3 * (4 + 12 + 4 + 12))])
def test_any_format_over_a_tensorized_matrix(fmt, rank, count):
    model = tiny_model("bert")
    batch = tiny_batch(model)
    base_out = logits(model, batch)
    tenpeft.inject(model, "lora", format=fmt, rank=rank, roles=("q",), shapes={"48x48": [4, 12, 4, 12]})
    assert torch.equal(logits(model, batch), base_out)
    report = tenpeft.parameter_report(model)
    assert report.matches_formula and report.components["factors"] == 2 * count
    _nonzero(model)
    for wrapper in (m for m in model.modules() if isinstance(m, ParallelUpdate)):
        update = wrapper.updates[0]
        assert update.factorization.shape == (4, 12, 4, 12)
        expected = update.factorization.reconstruct().reshape(48, 48)
        x = torch.randn(5, 48)
        with torch.no_grad():
            assert torch.allclose(update(x), x @ expected.T, atol=1e-4)


def test_plain_lora_is_unchanged():
    model = tenpeft.inject(tiny_model("bert"), "lora", rank=4)
    update = model.bert.encoder.layer[0].attention.self.query.updates[0]
    assert update.factorization.shape == (48, 48)
    assert {n for n, _ in update.named_parameters()} == {"factorization.factor_0", "factorization.factor_1"}
    assert tenpeft.parameter_report(model).components["factors"] == 2 * 2 * 4 * 96


@pytest.mark.parametrize("shapes, match", [
    ({"48x48": [4, 4, 12, 12]}, "does not split into row modes of product 48"),
    ({"48x48": [4, 12, 4, 11]}, "has product"),
    ({"64x48": [8, 8, 4, 12]}, "match no tensorized matrix"),
])
def test_bad_tensor_shapes_are_refused_before_the_model_changes(shapes, match):
    model = tiny_model("bert")
    with pytest.raises(tenpeft.TenpeftError, match=match):
        tenpeft.inject(model, "lora", format="user_kron", shapes=shapes)
    assert not hasattr(model, "tenpeft_state")


def test_an_old_lora_adapter_without_shapes_still_loads(tmp_path):
    model = tenpeft.inject(tiny_model("bert"), "lora", rank=2)
    train_steps(model, tiny_batch(model), steps=2)
    tenpeft.save_adapter(model, tmp_path)
    path = tmp_path / CONFIG_NAME
    config = json.loads(path.read_text())
    del config["hyperparameters"]["shapes"]  # as saved before lora took shapes=
    path.write_text(json.dumps(config))
    batch = tiny_batch(model)
    for loaded in (tenpeft.from_pretrained(tiny_model("bert"), tmp_path),
                   tenpeft.load_adapter(tenpeft.inject(tiny_model("bert"), "lora", rank=2), tmp_path)):
        assert (logits(loaded, batch) - logits(model, batch)).abs().max() <= 1e-6
    other = tenpeft.inject(tiny_model("bert"), "lora", rank=2, format="user_kron", shapes={"48x48": [4, 12, 4, 12]})
    with pytest.raises(tenpeft.TenpeftError, match="other settings"):  # a missing field means its default
        tenpeft.load_adapter(other, tmp_path)


class _BadNetwork(Kronecker):
    faults: dict = {}

    @classmethod
    def network(cls, shape, ranks):
        return cls.faults.get("network") or super().network(shape, ranks)


@pytest.mark.parametrize("network, match", [
    ([("a", (0, 2)), ("b", (1, 1))], r"modes \[1, 3\] must each be carried by exactly one factor"),
    ([("a", (0, 1)), ("b", (1, 3))], "gives mode 1 size 4, not 12"),
    ([("a", (0,)), ("b", (1, 3))], "has 2 axes but 1 labels"),
    ([("b", (1, 3)), ("a", (0, 2))], "network.. names"),
    ([("a", (0, 4)), ("b", (1, 4))], "bond 4 has size 12 in 'b', 4 elsewhere"),
])
def test_the_network_contract_is_checked_at_construction(network, match):
    _BadNetwork.faults = {"network": network}
    with pytest.raises(tenpeft.TenpeftError, match=match):
        _BadNetwork((4, 12, 4, 12))


def test_a_bond_may_join_several_factors_and_a_factor_carry_several_modes():
    class Joint(Kronecker):
        """``T[a, c, b, e] = sum_k A[a, b, k] B[c, k] C[e, k]``: A carries two modes, bond k joins three."""

        @classmethod
        def factor_shapes(cls, shape, ranks):
            o1, o2, i1, i2 = shape
            return {"a": (o1, i1, 3), "b": (o2, 3), "c": (i2, 3)}

        @classmethod
        def network(cls, shape, ranks):
            return [("a", (0, 2, 4)), ("b", (1, 4)), ("c", (3, 4))]

    t = Joint((2, 3, 4, 5), zero_factor=None, factor_std=1.0)
    expected = torch.einsum("abk,ck,ek->acbe", t.a, t.b, t.c)
    assert torch.allclose(t.reconstruct(), expected, atol=1e-6)
    x = torch.randn(7, 4, 5)
    assert torch.allclose(t.contract(x, (2, 3), (0, 1)), torch.einsum("zbe,acbe->zac", x, expected), atol=1e-5)
