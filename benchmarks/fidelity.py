"""What tenpeft's departures from the official codes change, measured (docs/methods.md quotes it).

    python benchmarks/fidelity.py

On MiniLM (the offline BERT of the studies, a new 2-way head) and one batch of 16 random
sequences of 64 tokens: for LoRTA at rank 4, the size of the attention update after one AdamW
step (lr 1e-3) with the official defaults (Kaiming-uniform factors, scale alpha/r = 2) and with
tenpeft's former defaults (init="std": reconstruction std 0.02, scale 1), as the relative
change of the logits and the Frobenius norm of every layer's summed ΔW; for VeRA, the norm of ΔW
with the same trained vectors under the PEFT-matching Kaiming bases and the former Gaussian ones.
"""
from __future__ import annotations

import math

import torch
import transformers

import tenpeft
from tenpeft.lab.models import load_model, resolve_model
from tenpeft.placements import ParallelUpdate


def _batch(vocab: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (16, 64), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(16) % 2}


def _delta_norm(model) -> float:
    with torch.no_grad():
        return math.sqrt(sum(float(w.delta_weight().pow(2).sum()) for w in model.modules()
                             if isinstance(w, ParallelUpdate) and w.updates))


def lorta_after_one_step(**kwargs) -> tuple[float, float]:
    """(relative logit change, ‖ΔW‖_F) after one AdamW step of LoRTA rank 4 (head frozen)."""
    torch.manual_seed(0)
    model = load_model(resolve_model("minilm"), num_labels=2).eval()
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        before = model(**batch).logits
    tenpeft.inject(model, "lorta", rank=4, head="frozen", **kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    model(**batch).loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(**batch).logits
    return float((after - before).norm() / before.norm()), _delta_norm(model)


def vera_delta(old_bases: bool) -> float:
    """‖ΔW‖_F of VeRA r=256 on MiniLM q, v with every d_l = 0.1 and b_l = 1."""
    model = tenpeft.inject(load_model(resolve_model("minilm"), num_labels=2), "vera", rank=256)
    with torch.no_grad():
        for shared in model.tenpeft_shared.values():
            if old_bases:  # the former draw: B ~ N(0, 1/r), A ~ N(0, 1/in), i.e. each sqrt(2) smaller in std
                shared.factor_0.normal_(0, 1 / math.sqrt(shared.factor_0.shape[1]))
                shared.factor_1.normal_(0, 1 / math.sqrt(shared.factor_1.shape[0]))
        for name, p in model.named_parameters():
            if name.endswith("scaling"):
                p.data.fill_(1.0)
    return _delta_norm(model)


def main() -> None:
    transformers.logging.set_verbosity_error()
    official = lorta_after_one_step()
    former = lorta_after_one_step(init="std", alpha=None)
    print("LoRTA r=4, one AdamW step (lr 1e-3):")
    print(f"  official defaults: logits moved {official[0]:.4f} (relative), |dW|_F {official[1]:.4f}")
    print(f"  former defaults:   logits moved {former[0]:.4f} (relative), |dW|_F {former[1]:.4f}")
    print(f"  ratio official/former: logits {official[0] / former[0]:.1f}x, |dW| {official[1] / former[1]:.1f}x")
    new, old = vera_delta(False), vera_delta(True)
    print(f"VeRA r=256, d=0.1, b=1: |dW|_F {new:.3f} (Kaiming, PEFT) vs {old:.3f} (former Gaussian): {new / old:.2f}x")


if __name__ == "__main__":
    main()
