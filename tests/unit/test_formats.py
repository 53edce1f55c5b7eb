"""Formats: golden reconstruction against TensorLy, contraction, counts, rank specs, init rule."""
import math

import pytest
import tensorly as tl
import torch

from tenpeft import Budget, TenpeftError
from tenpeft.formats import CP, FORMATS, TT, Dense, Tucker

SHAPE = (3, 4, 5)


def _tensorly_reconstruct(f):
    with tl.backend_context("pytorch"):
        return _tensorly_reconstruct_torch(f)


def _tensorly_reconstruct_torch(f):
    if isinstance(f, CP):
        return tl.cp_to_tensor((torch.ones(f.ranks[0]), [f.factor_0, f.factor_1, f.factor_2]))
    if isinstance(f, Tucker):
        return tl.tucker_to_tensor((f.core, [f.factor_0, f.factor_1, f.factor_2]))
    if isinstance(f, TT):
        return tl.tt_to_tensor([f.core_0, f.core_1, f.core_2])
    return f.tensor


@pytest.mark.parametrize("name", ["cp", "tucker", "tt", "dense"])
def test_reconstruct_matches_tensorly(name):
    f = FORMATS[name](SHAPE, 2, zero_factor=None)
    assert torch.allclose(f.reconstruct(), _tensorly_reconstruct(f).detach(), atol=1e-6)


@pytest.mark.parametrize("name", ["cp", "tucker", "tt", "dense"])
def test_contract_equals_dense_einsum(name):
    torch.manual_seed(0)
    f = FORMATS[name](SHAPE, 2, zero_factor=None)
    T, x = f.reconstruct().detach(), torch.randn(2, 6, 5)
    assert torch.allclose(f.contract(x, (2,), (0, 1)), torch.einsum("bsk,ijk->bsij", x, T), atol=1e-6)
    assert torch.allclose(f.contract(x, (2,), (1,), {0: 2}), torch.einsum("bsk,jk->bsj", x, T[2]), atol=1e-6)
    idx = torch.tensor([0, 3])
    assert torch.allclose(f.contract(x, (2,), (1, 0), {1: idx}), torch.einsum("bsk,ijk->bsji", x, T[:, idx]),
                          atol=1e-6)


@pytest.mark.parametrize("name", ["cp", "tucker", "tt"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_mode_split_factors_the_tensor_over_one_bond(name, mode):
    """T = F S with F (n_mode x b) the factor holding ``mode``; with another mode fixed too."""
    torch.manual_seed(0)
    f = FORMATS[name](SHAPE, 2, zero_factor=None)
    T = f.reconstruct().detach()
    rest = tuple(m for m in range(3) if m != mode)
    if name == "tt" and mode == 1:  # a middle core has two bonds larger than 1: no split
        assert f.mode_split(mode, rest) is None
        return
    first, small = f.mode_split(mode, rest)
    assert first.shape[0] == SHAPE[mode] and small.shape == (first.shape[1], *(SHAPE[m] for m in rest))
    torch.testing.assert_close(first @ small.flatten(1), T.permute(mode, *rest).flatten(1))
    other = rest[0]
    first, small = f.mode_split(mode, (rest[1],), {other: 1})
    torch.testing.assert_close(first @ small, T.select(other, 1) if mode < rest[1] else T.select(other, 1).t())


def test_mode_split_does_not_exist_for_dense_or_a_fixed_mode():
    assert FORMATS["dense"](SHAPE, 2).mode_split(0, (1, 2)) is None
    assert FORMATS["cp"](SHAPE, 2).mode_split(0, (1,), {0: 1, 2: 0}) is None


@pytest.mark.parametrize("name,rank,expected", [
    ("cp", 2, 2 * (3 + 4 + 5)),
    ("tucker", (2, 3, 2), 2 * 3 * 2 + 3 * 2 + 4 * 3 + 5 * 2),
    ("tt", 2, 3 * 2 + 2 * 4 * 2 + 2 * 5),
    ("tt", (2, 3), 3 * 2 + 2 * 4 * 3 + 3 * 5),
    ("dense", 1, 60),
])
def test_closed_form_count_equals_numel(name, rank, expected):
    f = FORMATS[name](SHAPE, rank)
    assert FORMATS[name].count(SHAPE, f.ranks) == expected
    assert sum(p.numel() for p in f.parameters()) == expected == f.num_parameters


def test_paper_counts():
    # LoRETTA: 768x8 as [8, 8, 12, 8] at TT rank 5 -> 580 parameters (LoRA r=8 needs 12,288 for U and V)
    assert TT.count((8, 8, 12, 8), TT.uniform_ranks((8, 8, 12, 8), 5)) == 580
    assert TT.count((8, 12, 8, 8), TT.uniform_ranks((8, 12, 8, 8), 5)) == 580
    # LoRTA: r (d + d_H + H + L + M)
    assert CP.count((768, 64, 12, 12, 4), (4,)) == 3440
    assert CP.count((1024, 64, 16, 24, 4), (8,)) == 9056


@pytest.mark.parametrize("name", ["cp", "tucker", "tt"])
def test_rank_budget_is_largest_that_fits(name):
    fmt, shape = FORMATS[name], (8, 8, 12, 8)
    ranks = fmt.resolve_rank(shape, Budget(2000))
    assert fmt.count(shape, ranks) <= 2000
    r = ranks[1] if name == "tt" else ranks[0]
    assert fmt.count(shape, fmt.uniform_ranks(shape, r + 1)) > 2000
    assert fmt.resolve_rank(shape, {"budget": 2000}) == ranks
    same = fmt.resolve_rank(shape, "same")
    assert fmt.count(shape, same) <= math.prod(shape) < fmt.count(shape, fmt.uniform_ranks(shape, same[-2 if name == "tt" else 0] + 1))
    assert fmt.resolve_rank(shape, 0.1) == fmt.resolve_rank(shape, Budget(int(0.1 * math.prod(shape))))


@pytest.mark.parametrize("rank,message", [
    (0, "rank must be an int >= 1"), (-3, "rank must be an int >= 1"), ((2, 0), "every rank must be"),
    (1.5, "fractional rank"), ("half", "rank must be"), (Budget(3), "cannot be met"), (True, "rank must be"),
])
def test_bad_ranks(rank, message):
    with pytest.raises(TenpeftError, match=message):
        TT(SHAPE, rank)


def test_bad_per_mode_lengths():
    with pytest.raises(TenpeftError, match="one rank per mode"):
        Tucker(SHAPE, (2, 2))
    with pytest.raises(TenpeftError, match="inner ranks"):
        TT(SHAPE, (2, 2, 2))
    with pytest.raises(TenpeftError, match="single int rank"):
        CP(SHAPE, (2, 3))
    with pytest.raises(TenpeftError, match="shape"):
        CP((3, 0), 2)


@pytest.mark.parametrize("name", ["cp", "tucker", "tt", "dense"])
def test_init_rule_zero_factor_and_std(name):
    torch.manual_seed(0)
    f = FORMATS[name]((6, 7, 8), 3)
    assert f.zero_factor is not None and torch.count_nonzero(f.reconstruct()) == 0
    g = FORMATS[name]((16, 16, 16), 4, zero_factor=None, init_std=0.5)
    assert 0.3 < float(g.reconstruct().detach().std()) < 0.8  # targets init_std (tltorch rule)


def test_frozen_factors_regenerate_from_seed_and_are_not_stored():
    a = CP((5, 6), 3, frozen=("factor_1",), seed=7, zero_factor="factor_0")
    b = CP((5, 6), 3, frozen=("factor_1",), seed=7, zero_factor="factor_0")
    c = CP((5, 6), 3, frozen=("factor_1",), seed=8, zero_factor="factor_0")
    assert torch.equal(a.factor_1, b.factor_1) and not torch.equal(a.factor_1, c.factor_1)
    assert [n for n, _ in a.named_parameters()] == ["factor_0"]
    assert "factor_1" not in a.state_dict()
    assert a.num_parameters == 5 * 3
    with pytest.raises(TenpeftError, match="both frozen"):
        CP((5, 6), 3, frozen=("factor_0",), zero_factor="factor_0")
    with pytest.raises(TenpeftError, match="no factor"):
        CP((5, 6), 3, frozen=("A",))


def test_dense_ignores_rank_and_meta_device_allocates_nothing():
    assert Dense(SHAPE).num_parameters == 60
    f = TT((4096, 4096, 32), 8, device="meta")
    assert f.core_0.is_meta and f.num_parameters == TT.count((4096, 4096, 32), f.ranks)


@pytest.mark.parametrize("name,rank", [("tt", (3, 5)), ("tucker", (3, 4, 5)), ("dense", 1)])
def test_from_tensor_is_exact_at_full_rank(name, rank):
    torch.manual_seed(0)
    tensor = torch.randn(SHAPE)
    f = FORMATS[name].from_tensor(tensor, rank)
    assert torch.allclose(f.reconstruct().detach(), tensor, atol=1e-5)
    assert f.ranks == FORMATS[name].resolve_rank(SHAPE, rank)


def test_from_tensor_cp_recovers_a_low_rank_tensor_and_pads_ranks():
    torch.manual_seed(0)
    truth = CP(SHAPE, 2, zero_factor=None, init_std=1.0).reconstruct().detach()
    assert torch.allclose(CP.from_tensor(truth, 2).reconstruct().detach(), truth, atol=1e-4)
    padded = TT.from_tensor(truth, 6)  # TT-SVD gives at most (1, 3, 5, 1): the rest is zero-padded
    assert padded.ranks == (1, 6, 6, 1) and torch.allclose(padded.reconstruct().detach(), truth, atol=1e-5)


def test_budget_uses_the_largest_rank_even_when_count_equals_rank():
    assert CP.resolve_rank((1,), Budget(7)) == (7,)
