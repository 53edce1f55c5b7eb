"""A shared tensor over the FFN matrices in one file: every FFN matrix of every layer as one
tensor train, a preset over tenpeft's shared-tensor layout.

Without a head mode the group's tensor is ``T (d, n, L, M)``: d the model width, n the FFN width,
L layers, M the FFN matrix types present (ffn_gate, ffn_in, ffn_out); type m in layer l reads
``T[:, :, l, m]`` (transposed for the matrices that map d to n). Built in as ``shared_ffn`` (CP);
here as a TT, registered as ``shared_ffn_tt``.

    python studies/rank_ablation.py --import shared_ffn_tt --methods shared_ffn_tt,shared_ffn --ranks 1,2 ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import tenpeft
from tenpeft import Method
from tenpeft.methods.shared import SharedTensorConfig, build_shared, shared_formula


@dataclass
class SharedFFNTTConfig(SharedTensorConfig):
    """One TT over every FFN matrix of the model (stored as ``model.tenpeft_shared["ffn_tt"]``)."""

    shared_key: ClassVar[str] = "ffn_tt"
    head_mode: ClassVar[bool] = False
    roles: Sequence[str] = ("ffn",)
    format: str = "tt"


tenpeft.register_method(Method("shared_ffn_tt", SharedFFNTTConfig, build_shared, shared_formula, "parallel",
                               needs_structure=True))
