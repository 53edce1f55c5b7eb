"""On a CUDA device: a model injected on the CPU and moved to the GPU gives the CPU's outputs and
gradients; a method injected on a GPU model puts every tensor there with the CPU's trainable set and
dtypes (a bf16 base too); merging and ``torch.compile`` keep the outputs; the benchmarks' CUDA
peak-memory probe sees an allocation. Marked ``cuda`` and skipped without a CUDA device:
``benchmarks/gpu.sh`` runs them (``pytest -m cuda tests/unit``)."""
from __future__ import annotations

import sys

import pytest
import torch

import tenpeft

import paths
from helpers import perturbed
from models import tiny_batch, tiny_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

METHODS = ["lora", "vera", "nola", "loretta_rep", "lorta", "lorta_tucker", "lorta_tt", "adapter", "loretta_adp"]
PARALLEL = ["lora", "lorta", "lorta_tucker", "lorta_tt"]  # mergeable: a parallel update on a weight
FAMILIES = ["bert", "llama"]
CUDA = "cuda"


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """No TF32, so the GPU's fp32 results are comparable with the CPU's at fp32 tolerances."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def injected(family: str, method: str, dtype=torch.float32, device="cpu"):
    """The tiny model of ``family`` (cast, moved), ``method`` injected, every adapter perturbed (seeded)."""
    model = tiny_model(family).to(device=device, dtype=dtype)
    torch.manual_seed(1)
    tenpeft.inject(model, method)
    torch.manual_seed(2)
    return perturbed(model)


def on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + backward in train mode: the loss and every trainable parameter's gradient (on the CPU)."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach().float().cpu(), grads


def assert_close_grads(got: dict, want: dict, **tol) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_moved_to_cuda_gives_the_cpu_outputs_and_gradients(family, method):
    cpu = injected(family, method)
    gpu = injected(family, method).to(CUDA)
    batch = tiny_batch(cpu)
    cpu_loss, cpu_grads = loss_and_grads(cpu, batch)
    gpu_loss, gpu_grads = loss_and_grads(gpu, on(batch, CUDA))
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-4, atol=1e-5)
    assert_close_grads(gpu_grads, cpu_grads, rtol=1e-3, atol=1e-5)


def placement(model) -> dict[str, tuple[torch.Size, torch.dtype]]:
    return {n: (p.shape, p.dtype) for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_injected_on_cuda_lives_there_and_trains(family, method, dtype):
    gpu = injected(family, method, dtype, CUDA)
    devices = {t.device.type for t in [*gpu.parameters(), *gpu.buffers()]}
    assert devices == {CUDA}
    assert placement(gpu) == placement(injected(family, method, dtype))  # the CPU's trainable set, shapes, dtypes
    loss, grads = loss_and_grads(gpu, on(tiny_batch(gpu), CUDA))
    assert torch.isfinite(loss)
    plain = {n for n, _ in tiny_model(family).named_parameters()}
    adapter = {n: g for n, g in grads.items() if n not in plain}  # not the head or a norm: the method's own
    assert adapter, sorted(grads)
    assert all(torch.isfinite(g).all() for g in adapter.values())
    assert any(g.abs().sum() > 0 for g in adapter.values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PARALLEL)
def test_merge_on_cuda_keeps_the_outputs(family, method):
    model = injected(family, method, device=CUDA).eval()
    inputs = {k: v for k, v in on(tiny_batch(model), CUDA).items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
        tenpeft.merge(model)
        after = model(**inputs).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lorta"])  # one inductor compile: gpu.sh gives these tests 50 s
def test_compiled_on_cuda_gives_the_eager_outputs_and_gradients(method):
    eager = injected("bert", method, device=CUDA)
    model = injected("bert", method, device=CUDA)
    batch = on(tiny_batch(model), CUDA)
    want_loss, want_grads = loss_and_grads(eager, batch)
    got_loss, got_grads = loss_and_grads(torch.compile(model), batch)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-4, atol=1e-5)
    assert_close_grads({n.removeprefix("_orig_mod."): g for n, g in got_grads.items()}, want_grads,
                       rtol=1e-3, atol=1e-5)


def test_the_benchmarks_cuda_peak_memory_probe_sees_an_allocation():
    sys.path.insert(0, str(paths.ROOT / "benchmarks"))
    from common import PeakMemory

    probe = PeakMemory(torch.device(CUDA))
    probe.start()
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=CUDA)
    assert probe.method.startswith("cuda max_memory_allocated")
    assert probe.peak_increase() >= block.numel()
