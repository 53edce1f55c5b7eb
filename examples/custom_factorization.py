"""A new decomposition in one file: the Tensor Ring (TR) format.

Cores ``core_i (r_i x n_i x r_{i+1})`` with the ring closed (``r_{d+1} = r_1``: the last core's right
bond is the first core's left bond), so ``T[i_1..i_d] = trace(G_1[:, i_1, :] ... G_d[:, i_d, :])``;
params ``sum r_i n_i r_{i+1}``. Everything else (reconstruction, contraction, rank budgets, init)
comes from :class:`tenpeft.formats.Factorization`. Demo (repo root, or after ``pip install -e .``):
``PYTHONPATH=. python examples/custom_factorization.py``.
"""
from __future__ import annotations

import math

import tenpeft
from tenpeft.formats import Factorization


class TR(Factorization):
    """Tensor-ring format. ``rank``: an int for every bond, or the ``d`` bond ranks ``(r_1..r_d)``
    (``r_i`` is core ``i``'s left bond). The last core is zeroed at init."""

    format_name = "tr"

    @classmethod
    def default_zero_factor(cls, shape):
        return f"core_{len(shape) - 1}"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return tuple(rank for _ in shape)

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        if len(ranks) != len(shape):
            raise tenpeft.TenpeftError(f"TR over shape {list(shape)} needs {len(shape)} ranks, got {list(ranks)}")
        return ranks

    @classmethod
    def factor_shapes(cls, shape, ranks):
        d = len(shape)
        return {f"core_{i}": (ranks[i], n, ranks[(i + 1) % d]) for i, n in enumerate(shape)}

    @classmethod
    def network(cls, shape, ranks):  # modes 0..d-1; bond d+i sits between core i-1 and core i
        d = len(shape)
        return [(f"core_{i}", (d + i, i, d + (i + 1) % d)) for i in range(d)]

    @classmethod
    def count(cls, shape, ranks):
        d = len(shape)
        return sum(ranks[i] * n * ranks[(i + 1) % d] for i, n in enumerate(shape))

    @classmethod
    def summed_terms(cls, ranks):
        return math.prod(ranks)


tenpeft.register_format("tr", TR)


if __name__ == "__main__":
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=101)
    model = AutoModelForCausalLM.from_config(config)
    ids = torch.randint(0, config.vocab_size, (2, 8))
    base = model(input_ids=ids).logits.detach()
    tenpeft.inject(model, "lorta", format="tr", rank=2)  # the shared (d, d_H, H, L, M) tensor as a TR
    print("max |adapted - base| at init:", (model(input_ids=ids).logits - base).abs().max().item())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: loss {loss.item():.4f}")
    print(tenpeft.parameter_report(model))
