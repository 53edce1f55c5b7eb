"""Tensor formats, registered by name in one place: ``FORMATS``.

A new format is one file defining a :class:`Factorization` subclass, then
``register_format("name", Cls)`` (see ``docs/extending.md``).
"""
from __future__ import annotations

from ..errors import TenpeftError
from ..plugins import lookup
from .base import Budget, Factorization, RankSpec
from .cp import CP
from .dense import Dense
from .kron import Kronecker
from .quanta import Quanta
from .tt import TT
from .tucker import Tucker

FORMATS: dict[str, type[Factorization]] = {"cp": CP, "tucker": Tucker, "tt": TT, "dense": Dense, "kron": Kronecker, "quanta": Quanta}


def register_format(name: str, cls: type[Factorization]) -> type[Factorization]:
    """Make ``cls`` available to every method under ``format=name``."""
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


__all__ = ["Budget", "CP", "Dense", "FORMATS", "Factorization", "Kronecker", "Quanta", "RankSpec", "TT", "Tucker",
           "get_format", "register_format"]
