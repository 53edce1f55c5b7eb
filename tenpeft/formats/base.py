"""The Factorization abstraction: one tensor held as a network of small factors.

A format describes a tensor ``T`` of shape ``(n_1, ..., n_d)`` by

* ``factor_shapes(shape, ranks)``: the name and shape of every factor;
* ``network(shape, ranks)``: for every factor, the labels of its axes. Labels ``0..d-1`` are the
  tensor's modes (each carried by exactly one factor; a factor may carry several, e.g. a Kronecker
  factor ``A (o_1 x i_1)``); larger labels are bonds summed over (a bond may join any number of
  factors: CP's rank label joins all ``d``); checked at construction (``check_network``);
* ``count(shape, ranks)``: the closed-form parameter count;
* ``summed_terms(ranks)``: how many products add up in one entry of ``T`` (used by the init rule).

Everything else (reconstruction, contraction of an input through the factors with a cost-chosen
path, fixing or selecting indices of a mode, rank budgets, frozen-random factors, the
zero-one-factor init) is written once here, so a new format is one short file.

A format registers itself by name when it is defined, ``class CP(Factorization, name="cp")``
(``FORMATS``; tltorch's subclass hook, so registration cannot be forgotten); ``register_format``
registers a class defined without a name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Mapping, Sequence, Union

import opt_einsum
import torch
from torch import nn

from ..errors import TenpeftError
from ..plugins import lookup


@dataclass(frozen=True)
class Budget:
    """A rank given as a parameter budget: the largest uniform rank whose count fits."""

    parameters: int


RankSpec = Union[int, Sequence[int], float, str, Budget, Mapping[str, int]]
Index = Union[int, torch.Tensor]


def validate_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints or raise a TenpeftError."""
    shape = tuple(shape)
    if not shape or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in shape):
        raise TenpeftError(f"tensor shape {list(shape)} is invalid: give a non-empty list of positive ints")
    return shape


def _check_rank_int(r, what: str) -> int:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise TenpeftError(f"{what} must be an int >= 1, got {r!r}")
    return r


class Factorization(nn.Module):
    """A tensor of shape ``shape`` held as trainable (or frozen-random) factors.

    ``rank``: an int (uniform), a per-mode tuple, a fraction of the dense size (float in (0, 1] or
    ``'same'``) or a parameter budget (``Budget(n)`` / ``{'budget': n}``).
    Init rule: every factor is drawn so that the reconstruction would have std ``init_std``, then
    the factor named by ``zero_factor`` is set to zero, so ``T == 0`` at init; the zero factor gets a
    gradient at the first step and, once non-zero, every other factor at the second.
    ``frozen``: names of factors regenerated from ``seed`` and never trained (VeRA/NOLA style); they
    are non-persistent buffers, so a state dict never stores them.
    """

    format_name: ClassVar[str] = ""
    targets_init_std: ClassVar[bool] = True  # False: the format draws its factors its own way (no init_std)

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        """``class X(Factorization, name="x")`` registers ``X`` as format ``"x"`` (its ``format_name``)."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.format_name = name
            register_format(name, cls)

    def __init__(self, shape: Sequence[int], rank: RankSpec = 1, *, init_std: float = 0.02,
                 factor_std: float | None = None, zero_factor: str | None = "default",
                 frozen: Sequence[str] = (), seed: int = 0,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.shape = validate_shape(shape)
        self.ranks = self.resolve_rank(self.shape, rank)
        self.seed = int(seed)
        shapes = self.check_network(self.shape, self.ranks)
        zero = self.default_zero_factor(self.shape) if zero_factor == "default" else zero_factor
        unknown = [n for n in (*frozen, *([zero] if zero else [])) if n not in shapes]
        if unknown:
            raise TenpeftError(f"{type(self).__name__} has no factor(s) {unknown}; its factors are {list(shapes)}")
        if zero is not None and zero in frozen:
            raise TenpeftError(f"factor {zero!r} cannot be both frozen and the zero-initialised factor")
        self.zero_factor, self.frozen = zero, tuple(frozen)
        self.factor_names = tuple(shapes)
        for name, fshape in shapes.items():
            tensor = torch.empty(fshape, dtype=dtype, device=device)
            if name in self.frozen:
                self.register_buffer(name, tensor, persistent=False)
            else:
                setattr(self, name, nn.Parameter(tensor))
        self.reset_factors(init_std, factor_std)

    # ----- what a format defines -------------------------------------------------------------
    @classmethod
    def uniform_ranks(cls, shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
        """Ranks for one int ``rank``."""
        raise NotImplementedError

    @classmethod
    def per_mode_ranks(cls, shape: tuple[int, ...], ranks: tuple[int, ...]) -> tuple[int, ...]:
        """Validate and normalise a rank tuple."""
        raise TenpeftError(f"format {cls.format_name!r} takes a single int rank, got {list(ranks)}")

    @classmethod
    def factor_shapes(cls, shape, ranks) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @classmethod
    def network(cls, shape, ranks) -> list[tuple[str, tuple[int, ...]]]:
        raise NotImplementedError

    @classmethod
    def count(cls, shape, ranks) -> int:
        raise NotImplementedError

    @classmethod
    def check_network(cls, shape, ranks) -> dict[str, tuple[int, ...]]:
        """``factor_shapes`` checked against ``network``: the same factors, one label per axis, each
        mode carried by exactly one factor with its size, a bond of one size in every factor it
        joins; a TenpeftError naming the first fault (a format bug, not a user error)."""
        shapes, network, d = cls.factor_shapes(shape, ranks), cls.network(shape, ranks), len(shape)
        where = f"format {cls.format_name or cls.__name__!r} on shape {list(shape)}"
        if [name for name, _ in network] != list(shapes):
            raise TenpeftError(f"{where}: network() names {[n for n, _ in network]}, factor_shapes() {list(shapes)}")
        sizes, carriers = {}, {m: 0 for m in range(d)}
        for name, axes in network:
            if len(axes) != len(shapes[name]):
                raise TenpeftError(f"{where}: factor {name!r} has {len(shapes[name])} axes but {len(axes)} labels")
            for label, n in zip(axes, shapes[name]):
                if label == _BATCH or label < 0:
                    raise TenpeftError(f"{where}: factor {name!r} uses the reserved label {label}")
                if sizes.setdefault(label, n) != n:
                    raise TenpeftError(f"{where}: bond {label} has size {n} in {name!r}, {sizes[label]} elsewhere")
                if label < d:
                    carriers[label] += 1
                    if n != shape[label]:
                        raise TenpeftError(f"{where}: factor {name!r} gives mode {label} size {n}, not {shape[label]}")
        bad = [m for m, k in carriers.items() if k != 1]
        if bad:
            raise TenpeftError(f"{where}: modes {bad} must each be carried by exactly one factor")
        return shapes

    @classmethod
    def summed_terms(cls, ranks) -> int:
        raise NotImplementedError

    @classmethod
    def default_zero_factor(cls, shape) -> str:
        """The factor zeroed at init unless the caller names another."""
        raise NotImplementedError

    @classmethod
    def decompose(cls, array, ranks) -> dict:
        """Factors (numpy) fitted to ``array`` at ``ranks`` (optional: enables ``from_tensor``)."""
        raise TenpeftError(f"format {cls.format_name!r} cannot fit a given tensor (no decompose())")

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, rank: RankSpec, **kwargs) -> "Factorization":
        """This format fitted to ``tensor`` with TensorLy (CP-ALS, HOSVD, TT-SVD); where the fit
        returns smaller ranks than asked (rank above what the shape allows), factors are zero-padded.
        No factor is zeroed, so the result approximates ``tensor`` rather than starting at 0."""
        shape = validate_shape(tensor.shape)
        ranks = cls.resolve_rank(shape, rank)
        import tensorly

        with tensorly.backend_context("numpy"):  # never touch the caller's global TensorLy backend
            fitted = cls.decompose(tensor.detach().cpu().double().numpy(), ranks)
        result = cls(shape, ranks, zero_factor=None, dtype=kwargs.pop("dtype", tensor.dtype),
                     device=kwargs.pop("device", tensor.device), **kwargs)
        with torch.no_grad():
            for name, array in fitted.items():
                factor = getattr(result, name)
                factor.zero_()
                factor[tuple(slice(0, n) for n in array.shape)] = torch.as_tensor(array, dtype=factor.dtype)
        return result

    # ----- rank resolution -------------------------------------------------------------------
    @classmethod
    def resolve_rank(cls, shape: tuple[int, ...], rank: RankSpec) -> tuple[int, ...]:
        """Turn any accepted rank spec into this format's rank tuple."""
        if isinstance(rank, bool):
            raise TenpeftError(f"rank must be an int, a tuple, a fraction or a budget, got {rank!r}")
        if isinstance(rank, int):
            return cls.uniform_ranks(shape, _check_rank_int(rank, "rank"))
        if isinstance(rank, (tuple, list)):
            return cls.per_mode_ranks(shape, tuple(_check_rank_int(r, "every rank") for r in rank))
        if rank == "same":
            rank = 1.0
        if isinstance(rank, float):
            if not 0.0 < rank <= 1.0:
                raise TenpeftError(f"a fractional rank must lie in (0, 1], got {rank}")
            return cls._ranks_for_budget(shape, int(rank * math.prod(shape)))
        if isinstance(rank, Mapping) and set(rank) == {"budget"}:
            rank = Budget(rank["budget"])
        if isinstance(rank, Budget):
            return cls._ranks_for_budget(shape, _check_rank_int(rank.parameters, "a parameter budget"))
        raise TenpeftError(f"rank must be an int, a tuple, a fraction, 'same' or Budget(n), got {rank!r}")

    @classmethod
    def _ranks_for_budget(cls, shape, budget: int) -> tuple[int, ...]:
        smallest = cls.count(shape, cls.uniform_ranks(shape, 1))
        if smallest > budget:
            raise TenpeftError(
                f"a budget of {budget} parameters cannot be met by format {cls.format_name!r} on shape "
                f"{list(shape)}: even rank 1 needs {smallest}; raise the budget or use a smaller shape")
        lo, hi = 1, budget + 1  # count(r) >= r wherever the count depends on r at all
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cls.count(shape, cls.uniform_ranks(shape, mid)) <= budget:
                lo = mid
            else:
                hi = mid
        return cls.uniform_ranks(shape, lo)

    # ----- init --------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_factors(self, init_std: float, factor_std: float | None = None) -> None:
        """Apply the init rule (see the class docstring); frozen factors come from ``seed``.
        ``factor_std`` draws every factor with that std instead of targeting ``init_std``."""
        n_factors = len(self.factor_names)
        std = factor_std or (init_std ** 2 / self.summed_terms(self.ranks)) ** (1.0 / (2 * n_factors))
        for i, name in enumerate(self.factor_names):
            factor = getattr(self, name)
            if factor.is_meta:
                continue
            if name == self.zero_factor:
                factor.zero_()
            elif name in self.frozen:
                gen = torch.Generator().manual_seed(self.seed * 1009 + i)
                factor.copy_(torch.randn(factor.shape, generator=gen) * std)
            else:
                factor.normal_(0.0, std)

    # ----- use ---------------------------------------------------------------------------------
    def factors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.factor_names}

    @property
    def num_parameters(self) -> int:
        """Closed-form count of the trainable entries (frozen factors excluded)."""
        shapes = self.factor_shapes(self.shape, self.ranks)
        frozen = sum(math.prod(shapes[n]) for n in self.frozen)
        return self.count(self.shape, self.ranks) - frozen

    def reconstruct(self) -> torch.Tensor:
        """The full tensor ``T`` (only for small tensors, tests and merging)."""
        return self.contract(None, (), tuple(range(len(self.shape))))

    def contract(self, x: torch.Tensor | None, x_modes: Sequence[int], out_modes: Sequence[int],
                 fixed: Mapping[int, Index] | None = None) -> torch.Tensor:
        """Contract ``x`` through the factors without building ``T``.

        ``x`` has shape ``(*batch, n_{x_modes[0]}, ...)``; the result has shape
        ``(*batch, n_{out_modes[0]}, ...)``. ``fixed[mode]`` is an int (the mode is sliced at that
        index and disappears) or a 1-D index tensor (the mode keeps only those indices).
        The contraction order is the cheapest one opt_einsum finds for these shapes (cached; under
        ``torch.compile``, torch.einsum's own opt_einsum planning, which dynamo can trace).
        """
        batch = x.shape[: x.dim() - len(x_modes)] if x is not None else ()
        operands, labels, out_labels = self._operands(x, x_modes, out_modes, fixed)
        result = _einsum(operands, labels, out_labels)
        return result.reshape(*batch, *result.shape[1 if x is not None else 0:])

    def mode_split(self, mode: int, out_modes: Sequence[int],
                   fixed: Mapping[int, Index] | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``T`` (``fixed`` applied) as ``F @ S`` over one bond ``b``: ``F (n_mode x b)`` is the one
        factor holding ``mode``; ``S (b, *out_modes)`` contracts every other factor (small: no mode
        ``mode``). Then ``x -> (x @ F) @ S`` costs two row-major matmuls. None where the split does
        not exist (the factor holds other modes or several bonds larger than 1; ``mode`` fixed)."""
        if mode in (fixed or {}):
            return None
        network = self.network(self.shape, self.ranks)
        index = next(i for i, (_, axes) in enumerate(network) if mode in axes)
        name, axes = network[index]
        factor, n_modes = getattr(self, name), len(self.shape)
        bonds = [a for a in axes if a >= n_modes]
        joined = [a for a in bonds if any(a in other for j, (_, other) in enumerate(network) if j != index)]
        if len(axes) - len(bonds) != 1 or not joined:
            return None
        large = [a for a in bonds if factor.shape[axes.index(a)] > 1]
        if len(large) > 1 or not set(large) <= set(joined):
            return None
        bond = (large or joined)[0]  # a bond the other factors share (a TT boundary bond of size 1 is not)
        first = factor.movedim(axes.index(mode), 0)
        first = first.reshape(first.shape[0], -1)  # the other axes: the bond and bonds of size 1
        operands, labels, _ = self._operands(None, (), (), fixed)
        del operands[index], labels[index]
        return first, _einsum(operands, labels, (bond, *out_modes))

    def contraction_info(self, x_shape: Sequence[int], x_modes: Sequence[int], out_modes: Sequence[int],
                         fixed: Mapping[int, Index] | None = None) -> opt_einsum.contract.PathInfo:
        """opt_einsum's plan for ``contract`` on an input of ``x_shape``: path, flops, largest
        intermediate (to check that no large tensor is ever formed)."""
        x = torch.empty(tuple(x_shape), device="meta")
        operands, labels, out_labels = self._operands(x, x_modes, out_modes, fixed)
        shapes = [tuple(t.shape) for t in operands]
        return opt_einsum.contract_path(_equation(labels, out_labels), *shapes, shapes=True, optimize="auto")[1]

    def _operands(self, x, x_modes, out_modes, fixed):
        """The factors (sliced by ``fixed``) and ``x`` with their axis labels."""
        operands, labels = [], []
        for name, axes in self.network(self.shape, self.ranks):
            tensor, axes = getattr(self, name), list(axes)
            for mode, index in (fixed or {}).items():
                if mode in axes:
                    pos = axes.index(mode)
                    if isinstance(index, int):
                        tensor = tensor.select(pos, index)
                        axes.pop(pos)
                    else:
                        tensor = tensor.index_select(pos, index.to(tensor.device))
            operands.append(tensor)
            labels.append(tuple(axes))
        if x is None:
            return operands, labels, tuple(out_modes)
        batch_dims = x.dim() - len(x_modes)
        operands.insert(0, x.reshape(-1, *x.shape[batch_dims:]))
        labels.insert(0, (_BATCH, *x_modes))
        return operands, labels, (_BATCH, *out_modes)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, ranks={list(self.ranks)}, zero={self.zero_factor}, frozen={list(self.frozen)}"


FORMATS: dict[str, type[Factorization]] = {}  # filled by the subclass hook and register_format


def register_format(name: str, cls: type[Factorization]) -> type[Factorization]:
    """Make ``cls`` available to every method under ``format=name`` (a name given again is replaced)."""
    if not (isinstance(cls, type) and issubclass(cls, Factorization)):
        raise TenpeftError(f"register_format needs a Factorization subclass, got {cls!r}")
    FORMATS[name] = cls
    return cls


def get_format(name: str) -> type[Factorization]:
    """The format class registered under ``name`` (installed plugins are loaded if it is not yet)."""
    fmt = lookup(FORMATS, name)
    if fmt is None:
        raise TenpeftError(f"unknown tensor format {name!r}; known formats: {sorted(FORMATS)}")
    return fmt


_BATCH = 63  # a label no format uses for a mode or bond


def _equation(labels, out_labels) -> str:
    """An einsum equation for integer axis labels."""
    used = sorted({lab for axes in labels for lab in axes} | set(out_labels))
    symbol = {lab: opt_einsum.get_symbol(i) for i, lab in enumerate(used)}
    return ",".join("".join(symbol[a] for a in axes) for axes in labels) + "->" + "".join(
        symbol[a] for a in out_labels)


def _einsum(operands, labels, out_labels) -> torch.Tensor:
    """Contract labelled operands: a cached opt_einsum expression, or torch.einsum while compiling
    (dynamo cannot trace opt_einsum; torch.einsum plans with it too) and inside an autocast region
    (autocast casts torch.einsum's matmuls; opt_einsum's tensordot refuses mixed dtypes)."""
    equation = _equation(labels, out_labels)
    if torch.compiler.is_compiling() or _autocasting(operands[0]):
        return torch.einsum(equation, *operands)
    return _expression(equation, tuple(tuple(t.shape) for t in operands))(*operands, backend="torch")


def _autocasting(tensor: torch.Tensor) -> bool:
    """Whether an autocast region is active for ``tensor``'s device (torch < 2.4 takes no device)."""
    if _AUTOCAST_TAKES_DEVICE:
        return torch.is_autocast_enabled(tensor.device.type)
    return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


_AUTOCAST_TAKES_DEVICE = torch.__version__ >= (2, 4)  # TorchVersion compares as a version


@lru_cache(maxsize=4096)
def _expression(equation: str, shapes):
    """A cached opt_einsum expression: the contraction path is chosen by cost once per shapes."""
    return opt_einsum.contract_expression(equation, *shapes, optimize="auto")
