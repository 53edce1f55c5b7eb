"""Tensor formats, registered by name in one place: ``FORMATS``.

A new format is one file defining a :class:`Factorization` subclass that names itself,
``class TR(Factorization, name="tr")``; a class defined without a name is registered with
``register_format("name", Cls)`` (see ``docs/extending.md``). Importing this package imports the
built-in formats, which registers them (in this order).
"""
from __future__ import annotations

from .base import FORMATS, Budget, Factorization, RankSpec, get_format, register_format
from .cp import CP
from .tucker import Tucker
from .tt import TT
from .dense import Dense
from .kron import Kronecker
from .quanta import Quanta

__all__ = ["Budget", "CP", "Dense", "FORMATS", "Factorization", "Kronecker", "Quanta", "RankSpec", "TT", "Tucker",
           "get_format", "register_format"]
