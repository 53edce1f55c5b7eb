"""Quantized base weights: what tenpeft recognises as one, so that no operation that writes into a base
weight (``merge``) runs on it and silently rounds the update away.

A weight counts as quantized when the model was loaded with a ``quantization_config`` (transformers sets
``model.hf_quantizer``), when the weight is not floating point (int8, packed 4-bit), or when the layer or
its weight comes from a quantization library (:data:`QUANTIZATION_PACKAGES`, ``torch.ao`` quantized modules).
"""
from __future__ import annotations

from torch import nn

QUANTIZATION_PACKAGES = ("optimum", "bitsandbytes", "torchao", "hqq", "awq", "auto_gptq", "gptqmodel",
                         "compressed_tensors", "torch.ao.nn.quantized", "torch.nn.quantized")


def _from_quantization_package(obj) -> bool:
    module = type(obj).__module__ or ""
    return any(module == p or module.startswith(p + ".") for p in QUANTIZATION_PACKAGES)


def quantized_reason(model: nn.Module, name: str, layer: nn.Module) -> str | None:
    """Why the weight of ``layer`` (named ``name`` in ``model``) is quantized, or None when it is a plain
    floating-point weight that an update can be added to."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        return f"the model was loaded quantized ({type(quantizer).__name__})"
    weight = getattr(layer, "weight", None)
    if _from_quantization_package(layer):
        return f"{name} is a {type(layer).__module__}.{type(layer).__name__}"
    if weight is None or not weight.dtype.is_floating_point or _from_quantization_package(weight):
        kind = "no weight" if weight is None else f"a {type(weight).__name__} of {weight.dtype}"
        return f"{name} holds {kind}"
    return None
