"""Formats: the contract every registered format keeps (``FORMATS``, so a format added is tested
without editing a list), golden reconstruction against TensorLy, closed-form counts, rank specs."""
import math
import string

import pytest
import tensorly as tl
import torch

from tenpeft import Budget, TenpeftError
from tenpeft.formats import CP, FORMATS, TT, Dense, Factorization, Tucker, register_format

SHAPE = (3, 4, 5)
NAMES = list(FORMATS)  # every format registered when the tests are collected
# the first shape a format accepts is its contract shape: 3-way, else (out, out, in, in) as a matrix format needs
CANDIDATE_SHAPES = ((3, 4, 5), (2, 3, 4, 5), (2, 3, 2, 2, 3, 2))


def contract_shape(fmt: type[Factorization], scale: int = 1) -> tuple[int, ...]:
    """The first of ``CANDIDATE_SHAPES`` (each size times ``scale``) that ``fmt`` accepts at rank 2."""
    for shape in CANDIDATE_SHAPES:
        shape = tuple(n * scale for n in shape)
        try:
            fmt.resolve_rank(shape, 2)
            return shape
        except TenpeftError:
            continue
    pytest.fail(f"format {fmt.format_name!r} accepts none of {CANDIDATE_SHAPES}; add a shape it takes")


def network_einsum(f: Factorization) -> torch.Tensor:
    """``T`` from ``f.network()`` by one plain ``torch.einsum`` (the reference for ``reconstruct``)."""
    network = f.network(f.shape, f.ranks)
    letters = {lab: string.ascii_letters[i] for i, lab in enumerate(sorted({a for _, axes in network for a in axes}))}
    inputs = ",".join("".join(letters[a] for a in axes) for _, axes in network)
    output = "".join(letters[m] for m in range(len(f.shape)))
    return torch.einsum(f"{inputs}->{output}", *(getattr(f, name) for name, _ in network))


def _letters(n: int) -> str:
    return string.ascii_lowercase[:n]


# ----- the contract, over every registered format -----------------------------------------------------------


def test_every_format_in_the_package_registers_itself():
    """Each Factorization subclass defined in tenpeft is in FORMATS under its own format_name."""
    def subclasses(cls):
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    built_in = [c for c in subclasses(Factorization) if c.__module__.startswith("tenpeft.")]
    assert built_in and all(FORMATS.get(c.format_name) is c for c in built_in), built_in


def test_a_subclass_named_in_its_class_line_is_registered_and_register_format_still_works():
    class Named(CP, name="test_named"):
        pass

    class Unnamed(CP):
        pass

    try:
        assert FORMATS["test_named"] is Named and Named.format_name == "test_named"
        assert Unnamed not in FORMATS.values()
        assert register_format("test_unnamed", Unnamed) is Unnamed and FORMATS["test_unnamed"] is Unnamed
        with pytest.raises(TenpeftError, match="needs a Factorization subclass"):
            register_format("test_bad", dict)
    finally:
        FORMATS.pop("test_named", None)
        FORMATS.pop("test_unnamed", None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_closed_form_count_equals_the_factors(name, rank):
    fmt = FORMATS[name]
    shape = contract_shape(fmt)
    f = fmt(shape, rank)
    shapes = fmt.factor_shapes(shape, f.ranks)
    assert list(f.factor_names) == list(shapes) == [n for n, _ in fmt.network(shape, f.ranks)]
    assert [tuple(getattr(f, n).shape) for n in f.factor_names] == list(shapes.values())
    assert fmt.count(shape, f.ranks) == sum(p.numel() for p in f.parameters()) == f.num_parameters


@pytest.mark.parametrize("name", NAMES)
def test_reconstruct_equals_the_network_einsum(name):
    torch.manual_seed(0)
    fmt = FORMATS[name]
    f = fmt(contract_shape(fmt), 2, zero_factor=None)
    torch.testing.assert_close(f.reconstruct(), network_einsum(f))
    assert f.reconstruct().abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_contract_equals_dense_einsum(name):
    """An input over the last mode, out to the others: whole, one mode fixed at an int, one at an index."""
    torch.manual_seed(0)
    fmt = FORMATS[name]
    f = fmt(contract_shape(fmt), 2, zero_factor=None)
    T, d = f.reconstruct().detach(), len(f.shape)
    x, modes, last = torch.randn(2, 6, f.shape[-1]), _letters(d), d - 1
    rest = tuple(range(last))
    expected = torch.einsum(f"BS{modes[-1]},{modes}->BS{modes[:-1]}", x, T)
    torch.testing.assert_close(f.contract(x, (last,), rest), expected)
    torch.testing.assert_close(f.contract(x, (last,), rest[1:], {0: 1}), expected[:, :, 1])
    idx = torch.tensor([0, f.shape[1] - 1])
    swapped = (1, 0, *rest[2:])
    torch.testing.assert_close(f.contract(x, (last,), swapped, {1: idx}),
                               expected.index_select(3, idx).transpose(2, 3))


@pytest.mark.parametrize("name", NAMES)
def test_mode_split_factors_the_tensor_over_one_bond_where_it_exists(name):
    """Where ``mode_split`` gives ``(F, S)``, ``T = F S``, also with another mode fixed."""
    torch.manual_seed(0)
    fmt = FORMATS[name]
    f = fmt(contract_shape(fmt), 2, zero_factor=None)
    T, d = f.reconstruct().detach(), len(f.shape)
    for mode in range(d):
        rest = tuple(m for m in range(d) if m != mode)
        split = f.mode_split(mode, rest)
        if split is None:
            continue
        first, small = split
        assert first.shape[0] == f.shape[mode] and small.shape == (first.shape[1], *(f.shape[m] for m in rest))
        torch.testing.assert_close(first @ small.flatten(1), T.permute(mode, *rest).flatten(1))
        fixed, kept = rest[0], rest[1:]
        first, small = f.mode_split(mode, kept, {fixed: 1})
        sliced = T.select(fixed, 1)  # modes: mode and kept, in increasing order
        order = sorted((mode, *kept))
        torch.testing.assert_close(first @ small.flatten(1),
                                   sliced.permute(order.index(mode), *(order.index(m) for m in kept)).flatten(1))


@pytest.mark.parametrize("name, modes", [("cp", (0, 1, 2)), ("tucker", (0, 1, 2)), ("tt", (0, 2))])
def test_mode_split_exists_where_one_factor_holds_the_mode_over_one_bond(name, modes):
    """CP and Tucker split at every mode, TT at its boundary cores (a middle core has two bonds)."""
    f = FORMATS[name](SHAPE, 2, zero_factor=None)
    assert [m for m in range(3) if f.mode_split(m, tuple(k for k in range(3) if k != m)) is not None] == list(modes)


def test_mode_split_does_not_exist_for_dense_or_a_fixed_mode():
    assert FORMATS["dense"](SHAPE, 2).mode_split(0, (1, 2)) is None
    assert FORMATS["cp"](SHAPE, 2).mode_split(0, (1,), {0: 1, 2: 0}) is None


@pytest.mark.parametrize("name", NAMES)
def test_init_rule_zero_at_init_and_every_factor_learns_within_two_steps(name):
    torch.manual_seed(0)
    fmt = FORMATS[name]
    f = fmt(contract_shape(fmt), 2)
    assert f.zero_factor is not None and torch.count_nonzero(f.reconstruct()) == 0
    target = torch.randn(f.shape)
    optimizer = torch.optim.SGD(f.parameters(), lr=0.1)
    moved = set()
    for _ in range(2):
        optimizer.zero_grad()
        ((f.reconstruct() - target) ** 2).sum().backward()
        moved |= {n for n, p in f.named_parameters() if p.grad.abs().sum() > 0}
        optimizer.step()
    assert moved == {n for n, _ in f.named_parameters()}


@pytest.mark.parametrize("name", NAMES)
def test_init_std_sets_the_reconstruction_std_unless_the_format_draws_its_own(name):
    """``targets_init_std``: the reconstruction's std is ``init_std`` (tltorch's rule); a format that draws
    its factors its own way (QuanTA's official draw) declares False, and then ``init_std`` changes nothing."""
    fmt = FORMATS[name]
    shape = contract_shape(fmt, scale=4)

    def drawn(init_std):
        torch.manual_seed(0)
        return fmt(shape, 4, zero_factor=None, init_std=init_std).reconstruct().detach()

    if fmt.targets_init_std:
        assert 0.3 < float(drawn(0.5).std()) < 0.8
    else:
        assert torch.equal(drawn(0.5), drawn(0.02))


def _largest_rank_fitting(fmt, shape, budget: int) -> None:
    """``Budget(budget)`` resolves to a uniform rank ``r`` whose count fits, and no rank in ``(r, budget]`` fits
    (a rank above the budget never fits where the count depends on the rank)."""
    ranks = fmt.resolve_rank(shape, Budget(budget))
    assert fmt.count(shape, ranks) <= budget
    r = max(k for k in range(1, budget + 1) if fmt.uniform_ranks(shape, k) == ranks)
    assert all(fmt.count(shape, fmt.uniform_ranks(shape, k)) > budget for k in range(r + 1, budget + 1))
    assert fmt.resolve_rank(shape, {"budget": budget}) == ranks


@pytest.mark.parametrize("name", NAMES)
def test_rank_budget_is_the_largest_rank_that_fits(name):
    fmt = FORMATS[name]
    shape = contract_shape(fmt, scale=2)
    smallest, larger = (fmt.count(shape, fmt.uniform_ranks(shape, r)) for r in (1, 3))
    for budget in (smallest, smallest + (larger - smallest) // 2, math.prod(shape)):
        _largest_rank_fitting(fmt, shape, budget)
    assert fmt.resolve_rank(shape, "same") == fmt.resolve_rank(shape, Budget(math.prod(shape)))
    with pytest.raises(TenpeftError, match="cannot be met"):
        fmt.resolve_rank(shape, Budget(smallest - 1))
    tenth = int(0.1 * math.prod(shape))
    if tenth >= smallest:
        assert fmt.resolve_rank(shape, 0.1) == fmt.resolve_rank(shape, Budget(tenth))
    else:
        with pytest.raises(TenpeftError, match="cannot be met"):
            fmt.resolve_rank(shape, 0.1)


@pytest.mark.parametrize("name", NAMES)
def test_from_tensor_fits_the_tensor_or_says_it_cannot(name):
    """A format with ``decompose`` fits a tensor (closer than zero, ranks as asked, no factor zeroed);
    one without refuses in one line."""
    torch.manual_seed(0)
    fmt = FORMATS[name]
    shape = contract_shape(fmt)
    tensor = torch.randn(shape)
    if fmt.decompose.__func__ is Factorization.decompose.__func__:
        with pytest.raises(TenpeftError, match="cannot fit a given tensor"):
            fmt.from_tensor(tensor, 2)
        return
    f = fmt.from_tensor(tensor, 2)
    assert f.shape == shape and f.ranks == fmt.resolve_rank(shape, 2) and f.zero_factor is None
    assert torch.linalg.norm(f.reconstruct().detach() - tensor) < torch.linalg.norm(tensor)


# ----- goldens: TensorLy's reconstruction, closed-form counts, the papers' counts ---------------------------


def _tensorly_reconstruct(f):
    with tl.backend_context("pytorch"):
        return TENSORLY[f.format_name](f)


TENSORLY = {  # the formats TensorLy implements, each as TensorLy builds it
    "cp": lambda f: tl.cp_to_tensor((torch.ones(f.ranks[0]), [f.factor_0, f.factor_1, f.factor_2])),
    "tucker": lambda f: tl.tucker_to_tensor((f.core, [f.factor_0, f.factor_1, f.factor_2])),
    "tt": lambda f: tl.tt_to_tensor([f.core_0, f.core_1, f.core_2]),
    "dense": lambda f: f.tensor,
}


@pytest.mark.parametrize("name", sorted(TENSORLY))
def test_reconstruct_matches_tensorly(name):
    f = FORMATS[name](SHAPE, 2, zero_factor=None)
    assert torch.allclose(f.reconstruct(), _tensorly_reconstruct(f).detach(), atol=1e-6)


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
