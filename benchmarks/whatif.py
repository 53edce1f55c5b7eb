#!/usr/bin/env python
"""What the proposed engine fixes would buy, measured without touching the package: the fixed
forwards below are put on the *instances* of a second copy of each method (``lorta*`` etc.) in
this process only, and timed round-robin against the unchanged method and PEFT LoRA, exactly as
``train_step.py`` times them.

Fixes (see docs/performance.md, "Proposed fixes"):

* ``SharedTensorUpdate`` (lorta, lorta_tucker, lorta_tt): a slice of the shared tensor is a
  rank-``b`` matrix, where ``b`` is the bond of the one factor that carries the model-dim mode ``d``
  (CP rank, Tucker ``r_0``, TT ``r_1``). Contract every *other* factor (with the layer, matrix type
  and GQA heads fixed) into a small ``(b, H*d_H)`` matrix with the scale folded in, then two GEMMs
  that write row-major outputs: Q/K/V ``(x @ F_d) @ W_small``; O ``(x @ W_small^T) @ F_d^T``.
  Today's forward hands opt_einsum the whole network with ``x``; its last GEMM returns a
  transposed view for Q/K/V (strides ``(1, tokens)``), so the ``y + ΔW x`` add and the backward run
  strided, and ``* scale`` is one more pass over ``tokens x out``.
* ``MatrixUpdate`` with CP (lora): ``(x @ A) @ B^T`` with the scale folded into ``B^T`` (r x out),
  instead of opt_einsum + ``* scale`` over ``tokens x out``.
* ``**`` (shared-tensor methods only): the previous fix, and the small matrices of *all* (layer,
  matrix type) slices computed by one contraction per model forward (cleared by a forward pre-hook
  on the model), so each update is a ``select`` and two GEMMs: one autograd node for the small
  part per step instead of one group per update.
* ``TensorizedMatrix.weight`` (loretta_rep, loretta_adp, tensorized head): a direct chain of
  ``mm`` over the TT cores instead of ``Factorization.contract`` through opt_einsum (fewer Python
  steps per call; same math).

    python benchmarks/whatif.py --regime throughput
    python benchmarks/whatif.py --regime latency
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_methods as bm  # noqa: E402
import train_step as ts  # noqa: E402
from common import DTYPES, check_device, environment, loadavg, quantiles  # noqa: E402

from tenpeft.formats.base import _equation, _expression  # noqa: E402
from tenpeft.layouts.bottleneck import TensorizedMatrix  # noqa: E402
from tenpeft.layouts.per_matrix import MatrixUpdate  # noqa: E402
from tenpeft.layouts.shared import OUTPUT_HEAD_ROLES, SharedTensorUpdate  # noqa: E402


# ----- the fixed forwards ------------------------------------------------------------------------
def _split_plan(update: SharedTensorUpdate):
    """(name of the d-mode factor, its bond label, the other factors' network) for the shared tensor."""
    f = update.shared
    net = f.network(f.shape, f.ranks)
    shapes = f.factor_shapes(f.shape, f.ranks)
    d_name, d_axes = next((n, a) for n, a in net if 0 in a)
    bonds = [lab for lab, size in zip(d_axes, shapes[d_name]) if lab != 0 and size > 1]
    assert len(bonds) == 1, "the d-mode factor must have exactly one bond of size > 1"
    return d_name, d_axes, bonds[0]


def shared_forward_fixed(self: SharedTensorUpdate, x: torch.Tensor) -> torch.Tensor:
    f = self.shared
    d_name, _, bond = self._plan
    fd = getattr(f, d_name).reshape(f.shape[0], -1)  # CP (d, r), Tucker (d, r0), TT (1, d, r1) -> (d, b)
    operands, labels, _ = f._operands(None, (), (), self._fixed())
    keep = [i for i, (name, _) in enumerate(f.network(f.shape, f.ranks)) if name != d_name]
    operands = [operands[i] for i in keep]
    labels = [labels[i] for i in keep]
    out = (bond, 2, 1)
    expr = _expression(_equation(labels, out), tuple(tuple(t.shape) for t in operands))
    small = expr(*operands, backend="torch").reshape(fd.shape[1], -1)  # (b, H*dH), rows h*dH + j
    if self.scale != 1.0:
        small = small * self.scale
    if self.role in OUTPUT_HEAD_ROLES:
        return (x @ fd) @ small
    return (x @ small.T) @ fd.T


def install_batched(model) -> int:
    """Fix ``**``: every slice's small matrix from one contraction per model forward."""
    updates = [m for m in model.modules() if isinstance(m, SharedTensorUpdate)]
    if not updates:
        return 0
    f = updates[0].shared
    d_name, _, bond = _split_plan(updates[0])
    state = {"small": None}

    def clear(module, args, kwargs):
        state["small"] = None

    model.register_forward_pre_hook(clear, with_kwargs=True)
    n_d, d_h, n_h, n_l, n_m = f.shape

    def all_slices():
        if state["small"] is None:
            operands, labels, _ = f._operands(None, (), (), None)
            keep = [i for i, (name, _) in enumerate(f.network(f.shape, f.ranks)) if name != d_name]
            operands = [operands[i] for i in keep]
            labels = [labels[i] for i in keep]
            out = (3, 4, bond, 2, 1)  # (L, M, b, H, dH)
            expr = _expression(_equation(labels, out), tuple(tuple(t.shape) for t in operands))
            state["small"] = expr(*operands, backend="torch").reshape(n_l, n_m, -1, n_h * d_h)
        return state["small"]

    for u in updates:
        u._plan = (d_name, None, bond)
        u._all_slices = all_slices
        u.forward = types.MethodType(shared_forward_batched, u)
    return len(updates)


def shared_forward_batched(self: SharedTensorUpdate, x: torch.Tensor) -> torch.Tensor:
    f = self.shared
    fd = getattr(f, self._plan[0]).reshape(f.shape[0], -1)
    small = self._all_slices()[self.layer, self.matrix_index]  # (b, H*dH)
    if self.heads != f.shape[2]:  # grouped-query K/V: keep the heads this update reads
        small = small.unflatten(-1, (f.shape[2], f.shape[1])).index_select(1, self.head_index).flatten(1)
    if self.scale != 1.0:
        small = small * self.scale
    if self.role in OUTPUT_HEAD_ROLES:
        return (x @ fd) @ small
    return (x @ small.T) @ fd.T


def lora_forward_fixed(self: MatrixUpdate, x: torch.Tensor) -> torch.Tensor:
    f = self.factorization
    b_t = f.factor_0.T if self.scale == 1.0 else f.factor_0.T * self.scale
    return (x @ f.factor_1) @ b_t


def tt_weight_fixed(self: TensorizedMatrix) -> torch.Tensor:
    f = self.factorization
    cores = [getattr(f, n) for n in f.factor_names]
    out = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    return out.reshape(self.rows, self.cols)


def patch(model):
    """Put the fixed forwards on this model's instances; returns how many were patched."""
    n = 0
    for m in model.modules():
        if isinstance(m, SharedTensorUpdate):
            m._plan = _split_plan(m)
            m.forward = types.MethodType(shared_forward_fixed, m)
            n += 1
        elif isinstance(m, MatrixUpdate) and m.factorization.format_name == "cp":
            m.forward = types.MethodType(lora_forward_fixed, m)
            n += 1
        elif isinstance(m, TensorizedMatrix) and m.factorization.format_name == "tt":
            m.weight = types.MethodType(tt_weight_fixed, m)
            n += 1
    return n


def _variant(name: str, suffix: str, install, what: str, note: str):
    """A copy of method ``name`` whose built model gets ``install`` (which must change something)."""
    spec = bm.METHOD_SPECS[name]

    def build(model, family):
        model = spec.build(model, family)
        assert install(model) > 0, f"nothing to patch in {name}"
        return model
    return bm.MethodSpec(name + suffix, f"{spec.impl} ({what})", build, spec.shares_base, note)


def _patched(name):
    return _variant(name, "*", patch, "fixed", "with the proposed fix")


FIXABLE = ["lora", "loretta_rep", "lorta", "lorta_qv", "lorta_tucker", "lorta_tt", "loretta_adp"]
BATCHABLE = ["lorta", "lorta_qv", "lorta_tucker", "lorta_tt"]


def _batched(name):
    return _variant(name, "**", install_batched, "fixed, batched",
                    "with the proposed fix and one small contraction per forward")


def check_equal(base, family, regime, device, dtype):
    """The fixed forwards compute the same outputs and gradients as the package's."""
    for name, suffix in [(n, "*") for n in FIXABLE] + [(n, "**") for n in BATCHABLE]:
        ref = ts.build_runner(name, base, family, regime, device, dtype, False)
        new = ts.build_runner(name + suffix, base, family, regime, device, dtype, False)
        with torch.no_grad():  # non-zero updates, identical in both
            for (pn, p), (qn, q) in zip(ref.model.named_parameters(), new.model.named_parameters()):
                assert pn == qn
                if p.requires_grad and not p.any():
                    p.normal_(0.0, 0.02)
                if p is not q:
                    q.copy_(p)
        out_r = ref.call(**ref.inputs)
        out_n = new.call(**new.inputs)
        out_r.loss.backward()
        out_n.loss.backward()
        assert torch.allclose(out_r.logits, out_n.logits, atol=1e-4, rtol=1e-4), name
        for (pn, p), (_, q) in zip(ref.model.named_parameters(), new.model.named_parameters()):
            if p.grad is not None:
                assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-3), (name, pn)
        print(f"  {name}{suffix} == {name} (outputs and gradients)", flush=True)


def merged_forward_fixed(self, x, *args, **kwargs):
    """``ParallelUpdate.forward`` while merged, with the stale-merge check over a tensor list taken
    once at merge time (the package rebuilds it from ``parameters()`` of every update on every call)."""
    y = self.base(x, *args, **kwargs)
    if self.merged:
        if not torch.compiler.is_compiling() and tuple(t._version for t in self._merged_tensors) != self.merged_versions:
            raise RuntimeError("adapter factors changed after tenpeft.merge()")
        return y
    raise RuntimeError("what-if forward is for merged models only")


def merged_inference(regime_name, rounds=None):
    """base vs merged lorta (package) vs merged lorta with the cheaper stale check vs merge_and_unload."""
    import tenpeft
    from tenpeft.placements import ParallelUpdate

    regime = dict(ts.REGIMES[regime_name])
    if rounds:
        regime["rounds"] = rounds
    device = torch.device("cpu")
    base = bm.make_base(regime["family"], torch.float32, device)
    inputs = ts.make_inputs(regime["family"], regime["batch"], regime["seq"], device,
                            bm.base_config(regime["family"]).vocab_size, labels=False)

    def merged():
        model = tenpeft.inject(bm.clone(base, share=False), "lorta")
        with torch.no_grad():
            for p in model.tenpeft_shared.parameters():
                if not p.any():
                    p.normal_(0.0, 0.02)
        return tenpeft.merge(model).eval()

    fixed = merged()
    for m in fixed.modules():
        if isinstance(m, ParallelUpdate):
            m._merged_tensors = [t for u in m.updates for t in u.factor_tensors()]
            m.forward = types.MethodType(merged_forward_fixed, m)
    runners = [ts.InferenceRunner("base", bm.clone(base, share=True).eval(), inputs),
               ts.InferenceRunner("lorta merged (package)", merged(), inputs),
               ts.InferenceRunner("lorta merged (stale check over a cached tensor list)", fixed, inputs),
               ts.InferenceRunner("lorta merge_and_unload", tenpeft.unload(merged()), inputs)]
    ts.run_rounds(runners, 2, regime["steps"], device, record=False)
    ts.run_rounds(runners, regime["rounds"], regime["steps"], device)
    print(f"\n### merged inference what-if, regime `{regime_name}`, batch {regime['batch']} x {regime['seq']}, "
          f"{regime['rounds']} rounds x {regime['steps']} forwards\n")
    print("| model | median (s) | x base |\n|---|---:|---:|")
    rows = []
    for r in runners:
        q, w = ts.paired_ratios(r, runners[0]), quantiles(r.samples)
        rows.append({"name": r.name, "wall": w, "vs_base": q})
        print(f"| {r.name} | {w['median']:.4f} | {q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}] |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", choices=["throughput", "latency"], default="throughput")
    p.add_argument("--methods", default=None, help="comma-separated; * = with the fix")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--merged", action="store_true", help="only the merged-inference what-if")
    args = p.parse_args(argv)
    if args.merged:
        rows = merged_inference(args.regime, args.rounds)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"environment": environment(torch.device("cpu")), "regime_name": args.regime,
                           "merged_inference": rows}, fh, indent=1)
        return
    for name in FIXABLE:
        bm.METHOD_SPECS[name + "*"] = _patched(name)
    for name in BATCHABLE:
        bm.METHOD_SPECS[name + "**"] = _batched(name)
    regime = dict(ts.REGIMES[args.regime])
    for k in ("warmup", "rounds", "steps"):
        if getattr(args, k) is not None:
            regime[k] = getattr(args, k)
    device, dtype = check_device("cpu", "fp32", False), DTYPES["fp32"]
    env = environment(device)
    family = regime["family"]
    base = bm.make_base(family, dtype, device)
    check_equal(base, family, regime, device, dtype)
    names = args.methods.split(",") if args.methods else (
        ["floor", "peft_lora", "peft_lora_qkvo"] + [n for m in FIXABLE for n in (m, m + "*")]
        + [m + "**" for m in BATCHABLE] + ["official_loretta_rep", "official_loretta_adp"])
    runners = [ts.build_runner(n, base, family, regime, device, dtype, False) for n in names]
    for r in runners:
        r.step()
    ts.run_rounds(runners, max(regime["warmup"] - 1, 0), regime["steps"], device, record=False)
    ts.run_rounds(runners, regime["rounds"], regime["steps"], device)
    by = {r.name: r for r in runners}
    rows = []
    print(f"\n### what-if, regime `{args.regime}` ({env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, "
          f"{env['date']}; {regime['rounds']} rounds x {regime['steps']} steps after {regime['warmup']} warm-up; "
          f"load {env['loadavg_start']} -> {loadavg()})\n")
    print("| method | step median (s) | x PEFT LoRA (q,v) | x PEFT LoRA q,k,v,o | x floor | fixed / unfixed (paired) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in runners:
        vs_lora = ts.paired_ratios(r, by.get("peft_lora"))
        vs_floor = ts.paired_ratios(r, by.get("floor"))
        vs_qkvo = ts.paired_ratios(r, by.get("peft_lora_qkvo"))
        own = ts.paired_ratios(r, by.get(r.name.rstrip("*"))) if r.name.endswith("*") else None
        official = {"loretta_adp": "official_loretta_adp", "loretta_rep": "official_loretta_rep"}.get(r.name.rstrip("*"))
        extra = ts.paired_ratios(r, by.get(official)) if official else None
        fmt = lambda q: "–" if q is None else f"{q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}]"
        wall = quantiles(r.samples)
        rows.append({"method": r.name, "wall": wall, "vs_peft_lora": vs_lora, "vs_floor": vs_floor,
                     "vs_unfixed": own, "vs_official": extra, "official": official, "samples": r.samples})
        rows[-1]["vs_peft_lora_qkvo"] = vs_qkvo
        print(f"| {r.name} | {wall['median']:.4f} | {fmt(vs_lora)} | {fmt(vs_qkvo)} | {fmt(vs_floor)} | {fmt(own)}"
              + (f" (x {official} {fmt(extra)})" if extra else "") + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "regime": regime, "regime_name": args.regime, "rows": rows}, fh, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
