#!/usr/bin/env python
"""Train-step time and peak memory of every tenpeft method against PEFT, the official LoRETTA
package, full fine-tuning and a frozen-base floor (issue 5).

Every method is built on the same seeded random-init base. The timed step is forward + backward +
``torch.optim.AdamW.step`` over the trainable parameters + ``zero_grad(set_to_none=True)``. After the
warm-up rounds, the methods run round-robin in ONE process (the start of the order rotates every
round), so slow drifts of the machine hit every method alike; ratios are paired per round (a
method's time in round r over the reference's time in round r) and summarised by their median and
interquartile range. Peak memory is measured per method in a fresh subprocess (see ``--help``,
``bench_memory.py`` and ``benchmarks/common.py:PeakMemory``).

    python benchmarks/train_step.py --regime throughput --json out/throughput.json
    python benchmarks/train_step.py --regime latency
    python benchmarks/train_step.py --regime llama7b-slice
    python benchmarks/train_step.py --regime throughput --device cuda --dtype bf16 --compile   # GPU

Methods whose package is missing (``pip install loretta`` for the official LoRETTA) or that fail
to build or run are reported as skipped with the reason; the others still run.

This script holds the regimes, the timing (round-robin rounds, paired ratios), inference timing
and the command line; the base model and the methods are built in ``bench_methods.py``, peak
memory is measured by ``bench_memory.py``, the targets and Markdown tables are ``bench_targets.py``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import measure_memory, memory_child  # noqa: E402
from bench_methods import (BERT_METHODS, LLAMA_METHODS, METHOD_SPECS, SkipMethod, clone, make_base,  # noqa: E402
                           shared_weights)
from bench_targets import evaluate_targets, markdown  # noqa: E402
from common import DTYPES, check_device, environment, loadavg, quantiles, time_call  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
warnings.filterwarnings("ignore", message=".*use_return_dict.*")

# ----- regimes --------------------------------------------------------------------------------
REGIMES = {
    # batch x tokens, warm-up rounds, timed rounds, steps per method per round
    "throughput": dict(family="bert", batch=8, seq=128, warmup=2, rounds=7, steps=1, memory_steps=2),
    "latency": dict(family="bert", batch=1, seq=32, warmup=2, rounds=15, steps=5, memory_steps=3),
    "llama7b-slice": dict(family="llama", batch=1, seq=128, warmup=2, rounds=7, steps=1, memory_steps=2),
}


# ----- one method, ready to step ----------------------------------------------------------------
@dataclass
class Runner:
    name: str
    model: nn.Module
    call: Callable
    optimizer: torch.optim.Optimizer
    inputs: dict
    trainable: int
    samples: list[float] = field(default_factory=list)  # wall seconds per step
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per step
    rounds: list[list[float]] = field(default_factory=list)  # wall seconds per step, per timed round

    def step(self):
        out = self.call(**self.inputs)
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_inputs(family: str, batch: int, seq: int, device: torch.device, vocab: int, labels: bool = True) -> dict:
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    if family == "bert":
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if labels:
            inputs["labels"] = torch.randint(0, 2, (batch,), generator=gen).to(device)
        return inputs
    return {"input_ids": ids, **({"labels": ids} if labels else {})}


def build_runner(name: str, base: nn.Module | None, family: str, regime: dict, device, dtype, compile_: bool,
                 share: bool = True) -> Runner:
    spec = METHOD_SPECS[name]
    if base is None:  # a memory subprocess: the method's own base, no copy
        model = make_base(family, dtype, device, tiny=regime.get("tiny", False))
    else:
        model = clone(base, share=share and spec.shares_base)
    vocab = model.config.vocab_size
    model = spec.build(model, family)
    model.train()
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    if not params:
        raise SkipMethod("no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    call = compiled(model, compile_) if compile_ else model
    inputs = make_inputs(family, regime["batch"], regime["seq"], device, vocab)
    return Runner(name, model, call, optimizer, inputs, sum(p.numel() for p in params))


# ----- timing ----------------------------------------------------------------------------------
def run_rounds(runners: list, rounds: int, steps: int, device, fn_name: str = "step", record: bool = True):
    """Round-robin: each round runs ``steps`` steps of every runner; the order rotates each round."""
    for r in range(rounds):
        order = runners[r % len(runners):] + runners[:r % len(runners)]
        for runner in order:
            gc.collect()
            fn = getattr(runner, fn_name)
            this_round = []
            for _ in range(steps):
                wall, cpu = time_call(fn, device)
                if record:
                    runner.samples.append(wall)
                    runner.cpu.append(cpu)
                    this_round.append(wall)
            if record:
                runner.rounds.append(this_round)


def paired_ratios(a: Runner, ref: Runner) -> dict | None:
    """Median and IQR over rounds of (a's median step in round r) / (ref's median step in round r)."""
    if a is None or ref is None:
        return None
    ratios = [statistics.median(x) / statistics.median(y) for x, y in zip(a.rounds, ref.rounds)]
    return quantiles(ratios)


# ----- inference (merge) ------------------------------------------------------------------------
@dataclass
class InferenceRunner:
    name: str
    model: nn.Module
    inputs: dict
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rounds: list[list[float]] = field(default_factory=list)

    call: Callable | None = None

    def step(self):
        with torch.inference_mode():
            (self.call if self.call is not None else self.model)(**self.inputs)


def build_inference(base, family, regime, device, compile_: bool = False) -> list[InferenceRunner]:
    import tenpeft

    inputs = make_inputs(family, regime["batch"], regime["seq"], device, base.config.vocab_size,
                         labels=False)

    def lorta(share):
        model = tenpeft.inject(clone(base, share=share), "lorta")
        with torch.no_grad():  # a non-zero update (the zero-init factor gets random values)
            for p in model.tenpeft_shared.parameters():
                if not p.any():
                    p.normal_(0.0, 0.02)
        return model

    runners = [InferenceRunner("base", clone(base, share=True).eval(), inputs),
               InferenceRunner("lorta unmerged", lorta(True).eval(), inputs)]
    merged = tenpeft.merge(lorta(False))  # merging writes into the base weights: its own copy
    runners.append(InferenceRunner("lorta merged (tenpeft.merge)", merged.eval(), inputs))
    unloaded = tenpeft.merge_and_unload(lorta(False))
    runners.append(InferenceRunner("lorta merge_and_unload", unloaded.eval(), inputs))
    if compile_:
        for r in runners:
            r.call = compiled(r.model, compile_)
    return runners


def compiled(model: nn.Module, backend: str | bool) -> Callable:
    """``torch.compile(model)`` with the dynamo backend ``backend`` (``True``: the default, inductor)."""
    return torch.compile(model, backend="inductor" if backend is True else backend)


def compile_choice(args) -> str | bool:
    """False, or the dynamo backend of ``--compile`` (``--compile-backend``)."""
    return args.compile_backend if args.compile else False


def allow_recompiles(n: int) -> None:
    """Every model of this process runs the same transformers forward code, so dynamo compiles it
    once per model (guards on the module); its default limit (8 per code object) would silently
    send the later models to eager mode."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), n))
    for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 8 * n))


# ----- the command line -------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", choices=sorted(REGIMES), default="throughput")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="base model dtype (adapters stay fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model (compiled in the warm-up)")
    p.add_argument("--compile-backend", default="inductor",
                   help="dynamo backend of --compile (default inductor; 'eager' only traces: gpu.sh's CPU dry run)")
    p.add_argument("--methods", default=None, help="comma-separated subset (default: all of the regime)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default per regime)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default per regime)")
    p.add_argument("--steps", type=int, default=None, help="steps per method per round (default per regime)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    p.add_argument("--memory-steps", type=int, default=None, help="train steps in each memory subprocess")
    p.add_argument("--no-inference", action="store_true", help="skip the base / merged / unmerged lorta timing")
    p.add_argument("--tiny-model", action="store_true",
                   help="toy model sizes (bench_methods.TINY): checks the plumbing in seconds (gpu.sh --dry-run)")
    p.add_argument("--json", default=None, help="write the full result (raw samples included) here")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def base_regime(args) -> dict:
    """The regime of ``--regime``, marked ``tiny`` with ``--tiny-model``."""
    return dict(REGIMES[args.regime], **({"tiny": True} if args.tiny_model else {}))


def resolve(args) -> tuple[dict, list[str]]:
    """The regime with the command line's overrides, and the method names (checked)."""
    regime = base_regime(args)
    for k in ("warmup", "rounds", "steps"):
        if getattr(args, k) is not None:
            regime[k] = getattr(args, k)
    names = (args.methods.split(",") if args.methods else
             (BERT_METHODS if regime["family"] == "bert" else LLAMA_METHODS))
    unknown = [n for n in names if n not in METHOD_SPECS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {sorted(METHOD_SPECS)}")
    return regime, names


def describe_model(base: nn.Module) -> str:
    return (f"{type(base).__name__}.from_config({type(base.config).__name__}: {base.config.num_hidden_layers} "
            f"layers, hidden {base.config.hidden_size}, {base.config.num_attention_heads} heads, intermediate "
            f"{base.config.intermediate_size}, vocab {base.config.vocab_size}; attention "
            f"{base.config._attn_implementation}), dropout 0")


# ----- the timed run ----------------------------------------------------------------------------
def build_runners(names, base, family, regime, device, dtype, compile_) -> tuple[list[Runner], dict[str, str]]:
    """A runner per method on the shared ``base``; the methods that cannot be built, with why."""
    runners, skipped = [], {}
    for name in names:
        try:
            runners.append(build_runner(name, base, family, regime, device, dtype, compile_))
        except SkipMethod as err:
            skipped[name] = str(err)
        except Exception as err:  # noqa: BLE001
            skipped[name] = f"{type(err).__name__}: {err}"
        if name in skipped:
            print(f"  skip {name}: {skipped[name]}", flush=True)
    for prm in shared_weights(base).values():  # every method froze the weights it shares
        assert not prm.requires_grad, "a method made a shared base weight trainable"
    return runners, skipped


def warm_up_and_time(runners: list[Runner], skipped: dict, regime: dict, device) -> None:
    """One step per method (a failing one is dropped with its reason), the untimed warm-up rounds,
    then the timed rounds."""
    for runner in list(runners):
        try:
            runner.step()
        except Exception as err:  # noqa: BLE001
            skipped[runner.name] = f"{type(err).__name__} in the train step: {err}"
            runners.remove(runner)
            print(f"  skip {runner.name}: {skipped[runner.name]}", flush=True)
    run_rounds(runners, max(regime["warmup"] - 1, 0), regime["steps"], device, record=False)
    print(f"timing {len(runners)} methods: {regime['rounds']} rounds x {regime['steps']} steps", flush=True)
    run_rounds(runners, regime["rounds"], regime["steps"], device)


REFERENCES = ("peft_lora", "peft_lora_qkvo", "peft_vera", "floor", "official_loretta_rep", "official_loretta_adp")


def summarise(names, runners: list[Runner], skipped: dict) -> dict:
    """Per method: impl, note, trainable count, wall / CPU quantiles, paired ratios, raw samples."""
    by_name = {r.name: r for r in runners}
    methods = {}
    for name in names:
        spec = METHOD_SPECS[name]
        if name in skipped:
            methods[name] = {"impl": spec.impl, "skipped": skipped[name], "note": spec.note}
            continue
        r = by_name[name]
        vs = {ref: paired_ratios(r, by_name.get(ref)) for ref in REFERENCES if ref in by_name}
        methods[name] = {"impl": spec.impl, "note": spec.note, "trainable": r.trainable,
                         "wall": quantiles(r.samples), "cpu": quantiles(r.cpu), "vs": vs,
                         "samples": r.samples, "cpu_samples": r.cpu}
        print(f"  {name:22s} {methods[name]['wall']['median']:.4f} s", flush=True)
    return methods


def time_inference(base, family, regime, device, compile_) -> list[dict]:
    """Base / unmerged / merged lorta forwards, timed round-robin; [] if that fails."""
    inference = []
    try:
        inf = build_inference(base, family, regime, device, compile_)
        run_rounds(inf, max(regime["warmup"] - 1, 1), regime["steps"], device, record=False)
        run_rounds(inf, regime["rounds"], regime["steps"], device)
        for r in inf:
            inference.append({"name": r.name, "wall": quantiles(r.samples), "vs_base": paired_ratios(r, inf[0]),
                              "samples": r.samples})
        del inf
    except Exception as err:  # noqa: BLE001
        print(f"  inference timing failed: {type(err).__name__}: {err}", flush=True)
    return inference


def write_json(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args, base_regime(args), build_runner, compile_choice(args))

    regime, names = resolve(args)
    family = regime["family"]
    device = check_device(args.device, args.dtype, args.compile)
    dtype = DTYPES[args.dtype]
    if args.compile:
        allow_recompiles(4 * len(names) + 8)
    env = environment(device)
    print(f"regime {args.regime}: {regime}; methods {names}", flush=True)

    base = make_base(family, dtype, device, tiny=regime.get("tiny", False))
    model_desc = describe_model(base)
    runners, skipped = build_runners(names, base, family, regime, device, dtype, compile_choice(args))
    warm_up_and_time(runners, skipped, regime, device)
    methods = summarise(names, runners, skipped)

    inference = []
    if not args.no_inference:
        del runners
        gc.collect()
        inference = time_inference(base, family, regime, device, compile_choice(args))
    del base
    gc.collect()

    memory, how = {}, None
    if not args.no_memory:
        print("peak memory, one fresh process per method:", flush=True)
        memory = measure_memory([n for n in names if n not in skipped], args, os.path.abspath(__file__))
        how = next((m["how"] for m in memory.values() if "how" in m), None)

    result = {"regime_name": args.regime, "regime": regime, "dtype": args.dtype, "compile": args.compile,
              "compile_backend": args.compile_backend if args.compile else None,
              "environment": env, "loadavg_end": loadavg(), "model": model_desc, "methods": methods,
              "memory": memory, "memory_how": how,
              "memory_steps": args.memory_steps or regime["memory_steps"], "inference": inference}
    result["targets"] = evaluate_targets(args.regime, methods, memory, inference)
    print()
    print(markdown(result))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
