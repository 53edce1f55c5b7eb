"""A format added in one file (examples/custom_factorization.py: Tensor Ring) works end to end."""
import importlib.util

import pytest
import torch

import paths
import tenpeft
from helpers import logits
from models import tiny_batch, tiny_model

EXAMPLE = str(paths.EXAMPLES / "custom_factorization.py")


@pytest.fixture(scope="module")
def example():
    """Import the example by path (it registers "tr"); unregister afterwards."""
    spec = importlib.util.spec_from_file_location("custom_factorization", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tenpeft.FORMATS["tr"] is module.TR
    yield module
    tenpeft.FORMATS.pop("tr", None)


def test_reconstruct_equals_ring_einsum(example):
    torch.manual_seed(0)
    shape, ranks = (3, 4, 5), (2, 3, 4)
    f = example.TR(shape, ranks, zero_factor=None)
    assert [tuple(getattr(f, f"core_{i}").shape) for i in range(3)] == [(2, 3, 3), (3, 4, 4), (4, 5, 2)]
    expected = torch.einsum("aib,bjc,cka->ijk", f.core_0, f.core_1, f.core_2)
    assert torch.allclose(f.reconstruct(), expected, atol=1e-6)
    assert f.num_parameters == 2 * 3 * 3 + 3 * 4 * 4 + 4 * 5 * 2 == sum(p.numel() for p in f.parameters())
    assert example.TR.resolve_rank(shape, 2) == (2, 2, 2)
    # default init: the last core is zero, so T == 0
    assert torch.equal(example.TR(shape, 2).reconstruct(), torch.zeros(shape))


@pytest.mark.parametrize("family", ["roberta", "llama", "gpt2"])  # encoder, GQA decoder, fused QKV
def test_lorta_with_tr(example, family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    base = logits(model, batch)
    rank = 2
    tenpeft.inject(model, "lorta", format="tr", rank=rank)

    # (b) identity at injection
    assert (logits(model, batch) - base).abs().max().item() <= 1e-6

    # (c) 3 AdamW steps: every trainable parameter moves, no frozen one does
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != p.requires_grad, name

    # (d) report matches the formula; shared count is sum r*n_i*r over (d, d_H, H, L, M)
    shape = (48, 12, 4, 2, 4)  # tiny models: d 48, d_H 12, H 4, L 2, M 4 (q, k, v, o)
    report = tenpeft.parameter_report(model)
    assert report.matches_formula, (report.components, report.expected)
    assert report.components["shared_factors"] == sum(rank * n * rank for n in shape) == 280
    assert tuple(model.tenpeft_shared["attention"].shape) == shape
