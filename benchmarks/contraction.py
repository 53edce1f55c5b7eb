#!/usr/bin/env python
"""Adapter-only micro-benchmarks: contract the input through the factors, or rebuild the matrix
and do one matmul? For each shape the engine uses, forward + backward (gradients for the factors
and for the input) of ``y0 + ΔW x`` (the add of a parallel update into the base output ``y0`` is
included, as in ``ParallelUpdate``, because the layout of ``ΔW x`` decides what that add costs):

* ``factorized``  - ``Factorization.contract`` with the input (opt_einsum path), the result as it comes
* ``factorized+contig`` - the same, the result made contiguous before the add
* ``reconstruct`` - the needed matrix rebuilt from the factors, then one ``x @ W^T``
* ``engine``      - the tenpeft module the engine builds for that shape, called as the engine calls it

    python benchmarks/contraction.py                 # tokens 32 and 1024, ~2 minutes on 2 cores
    python benchmarks/contraction.py --json out.json --tokens 32,1024,4096
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_device, environment, quantiles, time_call  # noqa: E402

import tenpeft  # noqa: E402
from tenpeft.formats import get_format  # noqa: E402
from tenpeft.layouts.bottleneck import BottleneckUpdate, TensorizedLinear  # noqa: E402
from tenpeft.layouts.per_matrix import MatrixUpdate  # noqa: E402
from tenpeft.layouts.shared import SharedTensorUpdate, shared_group, shared_tensor_shape  # noqa: E402
from tenpeft.structure import Target  # noqa: E402

torch.manual_seed(0)


def nonzero(module):
    """Give the zero-initialised factors random values (timings must not depend on the init)."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return module


def tt_matrix_contract(fact, rows, cols, x):
    """``x @ W^T`` for ``W (rows x cols)`` held as ``fact`` over ``matrix_shape(rows, cols)``,
    contracting ``x`` through the factors (never building ``W``)."""
    shape = fact.shape
    n_row_modes = len(tenpeft.factorize(rows))
    row_modes = tuple(range(n_row_modes))
    col_modes = tuple(range(n_row_modes, len(shape)))
    xs = x.reshape(*x.shape[:-1], *shape[n_row_modes:])
    y = fact.contract(xs, col_modes, row_modes)
    return y.reshape(*x.shape[:-1], rows)


def cases(structure):
    """(name, engine's choice, builder) for every shape; the builder returns the variants."""
    out = []

    # 1. LoRETTA_rep bottleneck: ΔW = U V, U 768x8 as TT [8,8,12,8], V 8x768 as TT [8,12,8,8], rank 5
    def rep():
        m = nonzero(BottleneckUpdate(768, 768, "tt", 5, 8))
        u, v = m.u.factorization, m.v.factorization
        return m, {
            "factorized": lambda x: tt_matrix_contract(u, 768, 8, tt_matrix_contract(v, 8, 768, x)),
            "reconstruct": lambda x: (x @ m.v.weight().T) @ m.u.weight().T,
            "engine": m,
        }
    out.append(("loretta_rep ΔW=UV, U 768x8 [8,8,12,8], V 8x768 [8,12,8,8], TT r5", "reconstruct", rep, 768))

    # 2. LoRETTA_adp maps: 768 -> 64 and 64 -> 768 as TT [8,8,12,8,8] (and its transpose), rank 5
    def adp(inp, outp):
        def build():
            m = nonzero(TensorizedLinear(inp, outp, "tt", 5, zero=False))
            f = m.matrix.factorization
            return m, {
                "factorized": lambda x: tt_matrix_contract(f, outp, inp, x) + m.bias,
                "reconstruct": lambda x: F.linear(x, f.reconstruct().reshape(outp, inp), m.bias),
                "engine": m,
            }
        return build
    out.append(("adapter map 768->64 (down) TT [8,8,12,8,8] r5", "reconstruct", adp(768, 64), 768))
    out.append(("adapter map 64->768 (up) TT [8,8,12,8,8] r5", "reconstruct", adp(64, 768), 64))

    # 3. the shared 5th-order tensor (768, 64, 12, 12, 4) at rank 4, Q (head mode on rows) and O (on columns)
    shape = shared_tensor_shape(structure, 4)
    for fmt in ("cp", "tucker", "tt"):
        for role in ("q", "o"):
            def shared(fmt=fmt, role=role):
                fact = nonzero(get_format(fmt)(shape, 4, zero_factor=None))
                targets = {r: Target(r, r, 5, 768, 768) for r in ("q", "k", "v", "o")}
                layout = shared_group(structure, list(targets.values()), head_mode=True)
                upd = SharedTensorUpdate(fact, layout, targets[role])
                fixed = upd._fixed()
                if role == "q":
                    dw = lambda: fact.contract(None, (), (2, 1, 0), fixed).flatten(0, 1)  # (H*dH, d)
                    facto = lambda x: fact.contract(x, (0,), (2, 1), fixed).flatten(-2)
                else:
                    dw = lambda: fact.contract(None, (), (0, 2, 1), fixed).flatten(1, 2)  # (d, H*dH)
                    facto = lambda x: fact.contract(x.unflatten(-1, (12, 64)), (2, 1), (0,), fixed)
                return fact, {"factorized": facto, "reconstruct": lambda x: x @ dw().T, "engine": upd}
            out.append((f"shared (768,64,12,12,4) {fmt} r4, {role.upper()} projection", "factorized", shared, 768))

    # 4. LoRA as a per-matrix CP of rank 8 on 768x768
    def lora():
        m = nonzero(MatrixUpdate(768, 768, "cp", 8))
        f = m.factorization
        return m, {
            "factorized": lambda x: f.contract(x, (1,), (0,)),
            "reconstruct": lambda x: x @ f.reconstruct().T,
            "engine": m,
        }
    out.append(("lora per-matrix CP r8 768x768", "factorized", lora, 768))
    return out


def bench_case(builder, in_width, tokens, repeats, warmup, device):
    module, variants = builder()
    module.to(device)
    variants = dict(variants)
    variants["factorized+contig"] = (lambda f: (lambda x: f(x).contiguous()))(variants["factorized"])
    order = ["factorized", "factorized+contig", "reconstruct", "engine"]
    x = torch.randn(tokens, in_width, device=device, requires_grad=True)
    with torch.no_grad():
        probe = variants["reconstruct"](x)
        ref = variants["factorized"](x)
        assert torch.allclose(probe, ref, atol=1e-4, rtol=1e-3), "variants disagree"
        engine_out = variants["engine"](x)
        assert torch.allclose(engine_out, ref, atol=1e-4, rtol=1e-3), "engine disagrees"
    out_width = probe.shape[-1]
    y0 = torch.randn(tokens, out_width, device=device)  # the base output the update is added to
    grad = torch.randn(tokens, out_width, device=device)
    strides = {name: tuple(variants[name](x).stride()) for name in order}

    def step(fn):
        def run():
            (y0 + fn(x)).backward(grad)
            for p in module.parameters():
                p.grad = None
            x.grad = None
        return run

    fns = {name: step(variants[name]) for name in order}
    samples = {name: [] for name in order}
    for r in range(warmup + repeats):
        for name in order[r % len(order):] + order[:r % len(order)]:
            wall, _ = time_call(fns[name], device)
            if r >= warmup:
                samples[name].append(wall)
    stats = {name: quantiles(samples[name]) for name in order}
    return stats, strides, out_width


def strided_add(device, repeats: int = 200, warmup: int = 10) -> dict:
    """``y + d`` for a (8, 128, 768) fp32 ``d`` stored row-major vs the same values stored transposed
    (strides (128, 1, 1024): what the shared-tensor Q/K/V contraction returns at 8 x 128 tokens)."""
    y = torch.randn(8, 128, 768, device=device)
    d = torch.randn(8, 128, 768, device=device)
    d_t = d.reshape(1024, 768).T.contiguous().T.reshape(8, 128, 768)  # same values, transposed layout
    assert d_t.stride() == (128, 1, 1024) and torch.equal(d_t, d)
    samples = {"contiguous": [], "transposed": []}
    for r in range(warmup + repeats):
        for name, t in (("contiguous", d), ("transposed", d_t)):
            wall, _ = time_call(lambda: y + t, device)
            if r >= warmup:
                samples[name].append(wall)
    return {k: quantiles(v) for k, v in samples.items()}


def verdict(r) -> str:
    if r["winner"] == "tie":
        return "(tie)"
    return "(right)" if r["engine_uses"] == r["winner"] else "(**wrong**)"


def pick_winner(stats) -> str:
    """``factorized`` or ``reconstruct`` when its median is lower by more than 5% and the two IQRs
    do not overlap; otherwise ``tie``."""
    f, r = stats["factorized"], stats["reconstruct"]
    if f["median"] * 1.05 < r["median"] and f["q3"] < r["q1"]:
        return "factorized"
    if r["median"] * 1.05 < f["median"] and r["q3"] < f["q1"]:
        return "reconstruct"
    return "tie"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default="32,1024")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 200 at <=128 tokens, else 40)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--layout-only", action="store_true", help="only the strided-add check")
    args = p.parse_args(argv)
    device = check_device(args.device, "fp32", False)
    env = environment(device)
    layout = strided_add(device)
    print("y + d, (8, 128, 768) fp32: " + ", ".join(f"{k} operand {v['median'] * 1e6:,.0f} us "
                                                 f"[{v['q1'] * 1e6:,.0f}–{v['q3'] * 1e6:,.0f}]" for k, v in layout.items()))
    if args.layout_only:
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump({"environment": env, "strided_add": layout}, fh, indent=1)
        return
    with torch.device("meta"):
        from transformers import AutoModel, BertConfig

        structure = tenpeft.discover(AutoModel.from_config(BertConfig()))
    results = []
    for tokens in [int(t) for t in args.tokens.split(",")]:
        repeats = args.repeats or (200 if tokens <= 128 else 40)
        for name, engine_choice, builder, in_width in cases(structure):
            stats, strides, out_width = bench_case(builder, in_width, tokens, repeats, args.warmup, device)
            winner = pick_winner(stats)
            cand = {k: stats[k]["median"] for k in ("factorized", "reconstruct")}
            results.append({"case": name, "tokens": tokens, "engine_uses": engine_choice, "stats": stats,
                            "strides": strides, "winner": winner,
                            "winner_margin": max(cand.values()) / min(cand.values())})
            print(f"{tokens:5d}  {name:62s} " + "  ".join(f"{k} {v['median'] * 1e6:8.1f}us" for k, v in stats.items())
                  + f"  -> {winner}", flush=True)
    print()
    print(f"machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} threads {env['torch_threads']}; "
          f"{env['date']}")
    print()
    print("| shape | tokens | factorized (us) | factorized+contig (us) | reconstruct (us) | engine module (us) "
          "| winner (margin) | engine does | factorized output strides |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    for r in results:
        s = r["stats"]
        f = lambda k: f"{s[k]['median'] * 1e6:,.0f} [{s[k]['q1'] * 1e6:,.0f}–{s[k]['q3'] * 1e6:,.0f}]"
        print(f"| {r['case']} | {r['tokens']} | {f('factorized')} | {f('factorized+contig')} | {f('reconstruct')} | "
              f"{f('engine')} | {r['winner']} ({r['winner_margin']:.2f}x) | {r['engine_uses']} "
              f"{verdict(r)} | {r['strides']['factorized']} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "results": results, "strided_add": layout}, fh, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
