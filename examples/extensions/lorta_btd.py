"""A new method in one file: LoRTA's shared attention tensor held as a block-term decomposition.

The layout, the closed-form count and the init are LoRTA's (tenpeft's ``lorta``); only the format
differs, so the method is a preset: a config subclass with another default format, registered
under its own name. Uses the BTD format of ``btd_format.py`` (imported here, so one --import
brings both).

    python studies/rank_ablation.py --import lorta_btd --methods lorta_btd --ranks 1,2 ...
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import btd_format  # noqa: F401  (registers the "btd" format)
import tenpeft
from tenpeft.methods import METHODS
from tenpeft.methods.shared import LortaConfig


@dataclass
class LortaBTDConfig(LortaConfig):
    """LoRTA over Q/K/V/O with the shared 5th-order tensor as a BTD of rank ``rank``."""

    format: str = "btd"
    rank: int = 1


tenpeft.register_method(dataclasses.replace(METHODS["lorta"], name="lorta_btd", config=LortaBTDConfig))
