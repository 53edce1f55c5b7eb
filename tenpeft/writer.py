"""Writing an adapter's two files (what they hold: ``tenpeft.state``): ``write_adapter``, which
``tenpeft.io.save_adapter`` and an injected model's own ``save_pretrained`` (``tenpeft.model_methods``)
both call. Below ``io`` and ``engine``, so that ``inject`` can install a ``save_pretrained`` that writes."""
from __future__ import annotations

import os

import torch
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_write, atomic_write_json
from .placements import unmerged_weights
from .report import parameter_report
from .state import CONFIG_NAME, WEIGHTS_NAME, adapter_config, adapter_tensors


def write_adapter(model: nn.Module, directory: str, store_frozen_random: bool = False,
                  state_dict: dict[str, torch.Tensor] | None = None, is_main_process: bool = True) -> None:
    """Write the active adapter of ``model`` to ``directory`` (each file replaced atomically); a merged model
    writes the files of the unmerged one. A ``state_dict`` (e.g. the full one FSDP or DeepSpeed gather)
    supplies the values of the adapter tensors it holds. Tensors sharded by FSDP2 (DTensors) are gathered
    whole, which every process must join: call it on every rank, ``is_main_process`` true on the one that writes."""
    tensors = adapter_tensors(model, include_regenerable=store_frozen_random)
    if state_dict is not None:
        tensors = {n: (state_dict.get(n, t), c) for n, (t, c) in tensors.items()}
    config = adapter_config(model, tensors, store_frozen_random, parameter_report(model).to_dict())
    unmerged = unmerged_weights(model, [t for t, _ in tensors.values()])  # a merged head's W_0, not W_0 + ΔW
    weights = {n: _whole(unmerged.get(id(t), t)).detach().to("cpu").contiguous() for n, (t, _) in tensors.items()}
    if not is_main_process:
        return
    os.makedirs(directory, exist_ok=True)
    atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda path: save_file(weights, path, metadata={"format": "pt"}))
    atomic_write_json(os.path.join(directory, CONFIG_NAME), config, indent=2)


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of an FSDP2 shard (``DTensor.full_tensor``, a collective); any other tensor as it is."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if callable(gather) else tensor
