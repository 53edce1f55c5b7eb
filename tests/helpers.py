"""Shared checks and fixtures' building blocks for every test tier."""
from __future__ import annotations

import torch

import tenpeft


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train_steps(model, batch, steps: int = 3, lr: float = 1e-2) -> list[set[str]]:
    """AdamW steps on the model's own loss; returns, per step, the trainable names with a non-zero grad."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.0)
    model.train()
    nonzero = []
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        nonzero.append({n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0})
        optimizer.step()
    model.eval()
    return nonzero


def trained(family: str, method: str, steps: int = 3, **hyperparameters):
    """The tiny ``family`` model injected with ``method`` and trained ``steps`` AdamW steps, and its batch."""
    from models import tiny_batch, tiny_model

    model = tenpeft.inject(tiny_model(family), method, **hyperparameters)
    batch = tiny_batch(model)
    train_steps(model, batch, steps=steps)
    return model, batch


def methods_placed(placement: str) -> list[str]:
    """The registered methods of one placement (``parallel``, ``serial``, ``base``), sorted."""
    return sorted(name for name, spec in tenpeft.METHODS.items() if spec.placement == placement)


def fingerprint(model):
    """Module types, parameter values and flags, attributes: what "untouched" means."""
    return ([(n, type(m).__name__) for n, m in model.named_modules()],
            {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
            sorted(vars(model)))


def assert_untouched(model, before) -> None:
    modules, params, attrs = fingerprint(model)
    assert modules == before[0] and attrs == before[2]
    assert params.keys() == before[1].keys()
    for name, (value, flag) in params.items():
        assert torch.equal(value, before[1][name][0]) and flag == before[1][name][1], name
    assert not hasattr(model, "tenpeft_state")


def perturbed(model, std: float = 0.1):
    """``model`` with noise of ``std`` added to every trainable parameter (so no update is zero)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * std)
    return model


def load_study(name: str):
    """The study script ``studies/<name>.py`` as a module (``study_<name>``), to call its ``main(argv)``."""
    import importlib.util

    import paths

    spec = importlib.util.spec_from_file_location(f"study_{name}", paths.STUDIES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_flags(model: str | None = "tiny-bert", *, seeds: str = "0", steps: int = 2, eval_every: int | None = None,
                batch: int = 4, train: int = 8, validation: int = 4, test: int = 8, max_length: int = 16,
                one_lr: bool = True) -> list[str]:
    """A study's flags for a run small enough for a test: a tiny model (None: the test gives one), ``steps``
    steps evaluated every ``eval_every`` (default: at the end), a few rows per split, no bars, and one rate
    (``one_lr=False``: the study's own default, a grid in the comparative studies)."""
    flags = [] if model is None else ["--model", model]
    return flags + ["--seeds", seeds, "--max-steps", str(steps), "--eval-every", str(eval_every or steps),
                    "--batch-size", str(batch), "--train-size", str(train), "--validation-size", str(validation),
                    "--test-size", str(test), "--max-length", str(max_length), "--no-progress"] + ["--one-lr"] * one_lr
