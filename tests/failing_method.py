"""A method that fails on purpose when it trains (``--import failing_method --methods failing_lora``):
LoRA, except that building it on real weights raises, so the checks before training (on the
meta device) pass and the run itself fails, in whichever process runs it."""
from __future__ import annotations

import dataclasses

import tenpeft
from tenpeft.methods import METHODS

LORA = METHODS["lora"]


def _build(ctx):
    if any(p.device.type != "meta" for p in ctx.model.parameters()):
        raise RuntimeError("failing_lora fails on purpose")
    return LORA.build(ctx)


tenpeft.register_method(dataclasses.replace(LORA, name="failing_lora", build=_build))
