#!/usr/bin/env python
"""Train-step time and peak memory of every tenpeft method against PEFT, the official LoRETTA
package, full fine-tuning and a frozen-base floor (issue 5).

Every method is built on the same seeded random-init base. The timed step is forward + backward +
``torch.optim.AdamW.step`` over the trainable parameters + ``zero_grad(set_to_none=True)``. After the
warm-up rounds, the methods run round-robin in ONE process (the start of the order rotates every
round), so slow drifts of the machine hit every method alike; ratios are paired per round (a
method's time in round r over the reference's time in round r) and summarised by their median and
interquartile range. Peak memory is measured per method in a fresh subprocess (see ``--help`` and
``benchmarks/common.py:PeakMemory``).

    python benchmarks/train_step.py --regime throughput --json out/throughput.json
    python benchmarks/train_step.py --regime latency
    python benchmarks/train_step.py --regime llama7b-slice
    python benchmarks/train_step.py --regime throughput --device cuda --dtype bf16 --compile   # GPU

Methods whose package is missing (``pip install loretta`` for the official LoRETTA) or that fail
to build or run are reported as skipped with the reason; the others still run.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (DTYPES, PeakMemory, check_device, environment, loadavg, mib, quantiles,  # noqa: E402
                    time_call)

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

BERT_METHODS = ["floor", "full", "peft_lora", "peft_lora_qkvo", "peft_vera", "lora", "vera", "nola", "loretta_rep",
                "loretta_rep+norms", "lorta", "lorta_qv", "lorta_tucker", "lorta_tt", "adapter", "loretta_adp",
                "official_loretta_rep", "official_loretta_adp"]
LLAMA_METHODS = ["floor", "peft_lora_qkvo", "lora_qkvo", "lorta", "lorta_tucker", "lorta_tt"]

# tenpeft methods that put a parallel update on a weight (targets: <= 1.02x / 1.05x PEFT LoRA)
PARALLEL = ["lora", "vera", "nola", "loretta_rep", "loretta_rep+norms", "lorta", "lorta_qv", "lorta_tucker",
            "lorta_tt"]
SHARED_TENSOR = ["lorta", "lorta_tucker", "lorta_tt"]


def base_config(family: str):
    if family == "bert":
        from transformers import BertConfig

        # BertConfig() defaults: 12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522
        return BertConfig(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                       vocab_size=32000, num_hidden_layers=2, attention_dropout=0.0)


def make_base(family: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
    """The seeded random-init base (fp32 init, then cast), in train mode."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = base_config(family)
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    model = auto.from_config(config)
    model.to(device=device, dtype=dtype)
    return model.train()


def shared_weights(base: nn.Module) -> dict[int, nn.Parameter]:
    """The big frozen weights (linears and embeddings of the backbone) that methods may share."""
    memo = {}
    for name, module in base.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.numel() >= 65536 \
                and not name.startswith(("classifier", "score")):
            memo[id(module.weight)] = module.weight
    return memo


def clone(base: nn.Module, share: bool) -> nn.Module:
    """A copy of ``base``; with ``share`` the big frozen weights are the same tensors (no method
    below changes them), everything else (norms, biases, the head) is the method's own."""
    return copy.deepcopy(base, dict(shared_weights(base)) if share else {})


# ----- methods --------------------------------------------------------------------------------
@dataclass
class MethodSpec:
    name: str
    impl: str  # tenpeft | peft | loretta (official) | baseline
    build: Callable[[nn.Module, str], nn.Module]  # (model, family) -> model to call
    shares_base: bool = True
    note: str = ""


def _tenpeft(method: str, **kw):
    def build(model, family):
        import tenpeft

        tenpeft.inject(model, method, **kw)
        return model
    return build


def _floor(model, family):
    for p in model.parameters():
        p.requires_grad_(False)
    norm = model.bert.embeddings.LayerNorm if family == "bert" else model.model.layers[0].input_layernorm
    for p in norm.parameters():
        p.requires_grad_(True)
    return model


def _full(model, family):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _peft(kind: str, qkvo: bool = False):
    def build(model, family):
        import peft

        if family == "bert":
            targets = ["query", "key", "value", "attention.output.dense"] if qkvo else ["query", "value"]
            task = "SEQ_CLS"  # trains the classifier like tenpeft's head="dense"
        else:
            targets = ["q_proj", "k_proj", "v_proj", "o_proj"] if qkvo else ["q_proj", "v_proj"]
            task = "CAUSAL_LM"
        if kind == "lora":
            config = peft.LoraConfig(r=8, lora_alpha=8, target_modules=targets, lora_dropout=0.0, task_type=task)
        else:
            config = peft.VeraConfig(r=256, target_modules=targets, task_type=task)
        return peft.get_peft_model(model, config)
    return build


def _official(kind: str):
    def build(model, family):
        try:
            import loretta
        except ImportError as err:
            raise SkipMethod(f"the official LoRETTA package is not installed ({err}); `pip install loretta`") from None
        if family != "bert":
            raise SkipMethod("official LoRETTA is only benchmarked on the BERT regimes")
        if kind == "rep":
            # LoRETTA_rep as in its README: bottleneck r=8, TT rank 5, alpha = r (scale 1), Q and V
            config = loretta.LorettaRepConfig(r=8, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                                              bias="none", task_type="SEQ_CLS", tensor_rank=5)
        else:
            # LoRETTA_adp: bottleneck 64, TT rank 5, relu, after attention output and FFN output
            # ("output.dense" suffix = attention.output.dense and output.dense of every layer)
            config = loretta.LorettaAdpConfig(bottleneck_size=64, non_linearity="relu", adapter_dropout=0.0,
                                              target_modules=["output.dense"], scaling=1.0, bias="none",
                                              task_type="SEQ_CLS", tensor_rank=5)
        return loretta.get_peft_model(model, config)
    return build


class SkipMethod(Exception):
    """A method that cannot run here; the message says why."""


METHOD_SPECS = {s.name: s for s in [
    MethodSpec("floor", "baseline", _floor, note="frozen base, only the first norm trainable"),
    MethodSpec("full", "baseline", _full, shares_base=False, note="every parameter trainable"),
    MethodSpec("peft_lora", "peft", _peft("lora"), note="LoraConfig(r=8, lora_alpha=8, q,v)"),
    MethodSpec("peft_lora_qkvo", "peft", _peft("lora", qkvo=True), note="LoraConfig(r=8, lora_alpha=8, q,k,v,o)"),
    MethodSpec("peft_vera", "peft", _peft("vera"), note="VeraConfig(r=256, q,v)"),
    MethodSpec("lora", "tenpeft", _tenpeft("lora")),
    MethodSpec("lora_qkvo", "tenpeft", _tenpeft("lora", roles=("q", "k", "v", "o")), note="lora on q,k,v,o"),
    MethodSpec("vera", "tenpeft", _tenpeft("vera")),
    MethodSpec("nola", "tenpeft", _tenpeft("nola")),
    MethodSpec("loretta_rep", "tenpeft", _tenpeft("loretta_rep")),
    MethodSpec("loretta_rep+norms", "tenpeft", _tenpeft("loretta_rep", train_norms=True),
               note="train_norms=True: the official LoRETTA_rep's trainable set"),
    MethodSpec("lorta", "tenpeft", _tenpeft("lorta"), note="defaults: q,k,v,o"),
    MethodSpec("lorta_qv", "tenpeft", _tenpeft("lorta", roles=("q", "v")), note='roles=("q", "v")'),
    MethodSpec("lorta_tucker", "tenpeft", _tenpeft("lorta_tucker"), note="q,k,v,o"),
    MethodSpec("lorta_tt", "tenpeft", _tenpeft("lorta_tt"), note="q,k,v,o"),
    MethodSpec("adapter", "tenpeft", _tenpeft("adapter")),
    MethodSpec("loretta_adp", "tenpeft", _tenpeft("loretta_adp")),
    MethodSpec("official_loretta_rep", "loretta", _official("rep"), note="loretta 0.1.0 LorettaRepConfig"),
    MethodSpec("official_loretta_adp", "loretta", _official("adp"), note="loretta 0.1.0 LorettaAdpConfig"),
]}


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
    model = clone(base, share=share and spec.shares_base) if base is not None else make_base(family, dtype, device)
    model = spec.build(model, family)
    model.train()
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    if not params:
        raise SkipMethod("no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    call = torch.compile(model) if compile_ else model
    inputs = make_inputs(family, regime["batch"], regime["seq"], device, base_config(family).vocab_size)
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

    inputs = make_inputs(family, regime["batch"], regime["seq"], device, base_config(family).vocab_size,
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
            r.call = torch.compile(r.model)
    return runners


# ----- memory (fresh subprocess per method) -----------------------------------------------------
def memory_child(args) -> None:
    """Build one method in this fresh process, then measure the peak memory increase of
    ``memory_steps`` train steps over the memory right after the build; print one JSON line."""
    regime = REGIMES[args.regime]
    device = check_device(args.device, args.dtype, args.compile)
    dtype = DTYPES[args.dtype]
    result = {"method": args.memory_child}
    try:
        runner = build_runner(args.memory_child, None, regime["family"], regime, device, dtype, args.compile,
                              share=False)
        probe = PeakMemory(device)
        probe.start()
        for _ in range(args.memory_steps or regime["memory_steps"]):
            runner.step()
        how = probe.method
        if device.type == "cpu" and all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
            how += " (glibc " + ", ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + ")"
        result.update(peak_increase_bytes=probe.peak_increase(), baseline_bytes=probe.baseline_bytes, how=how)
    except SkipMethod as err:
        result["skipped"] = str(err)
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        result["skipped"] = f"{type(err).__name__}: {err}"
    print("MEMORY_RESULT " + json.dumps(result), flush=True)


# glibc: a fixed mmap threshold (no dynamic raise) and trim threshold 0, so a freed tensor goes back
# to the OS at once and RSS follows the live memory. With glibc's defaults, the peak of one and the
# same method varied by +-30 MiB from run to run (llama7b-slice); with these it repeats within 0.3 MiB.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def measure_memory(names, args) -> dict:
    out = {}
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--regime", args.regime, "--device", args.device,
               "--dtype", args.dtype, "--memory-child", name]
        if args.compile:
            cmd.append("--compile")
        if args.memory_steps:
            cmd += ["--memory-steps", str(args.memory_steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MALLOC_ENV})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_RESULT ")]
        if lines:
            out[name] = json.loads(lines[-1][len("MEMORY_RESULT "):])
        else:
            out[name] = {"method": name, "skipped": f"memory subprocess failed (rc {proc.returncode}): "
                                                    f"{proc.stderr.strip().splitlines()[-1:]}"}
        print(f"  memory {name}: " + (mib(out[name].get("peak_increase_bytes")) + " MiB"
                                      if "peak_increase_bytes" in out[name] else out[name]["skipped"]), flush=True)
    return out


# ----- targets (issue 5) ------------------------------------------------------------------------
def evaluate_targets(regime_name, stats, memory, inference) -> list[dict]:
    rows = []

    def ratio(name, ref):
        s = stats.get(name, {}).get("vs", {}).get(ref)
        return None if s is None else s["median"]

    if regime_name in ("throughput", "latency"):
        limit = 1.02 if regime_name == "throughput" else 1.05
        for m in PARALLEL:
            r = ratio(m, "peft_lora")
            if r is not None:
                rows.append(dict(target=f"{m} <= {limit}x PEFT LoRA", value=round(r, 3), met=r <= limit))
        for mine, theirs in (("vera", "peft_vera"), ("lorta", "peft_lora_qkvo")):  # like for like (information)
            r = ratio(mine, theirs)
            if r is not None:
                rows.append(dict(target=f"(info) {mine} vs {theirs}", value=round(r, 3), met=r <= limit))
        if regime_name == "throughput":
            r = ratio("loretta_adp", "official_loretta_adp")
            if r is not None:
                rows.append(dict(target="loretta_adp <= 1.02x official LoRETTA_adp", value=round(r, 3), met=r <= 1.02))
        else:
            for mine, theirs in (("loretta_rep", "official_loretta_rep"), ("loretta_rep+norms", "official_loretta_rep"),
                                 ("loretta_adp", "official_loretta_adp")):
                r = ratio(mine, theirs)
                if r is not None:
                    rows.append(dict(target=f"{mine} faster than {theirs}", value=round(r, 3), met=r < 1.0))
    if regime_name == "llama7b-slice" and memory:
        def extra(n):
            return memory.get(n, {}).get("peak_increase_bytes")
        floor, lora = extra("floor"), extra("peft_lora_qkvo")
        if floor is not None and lora is not None:
            for m in SHARED_TENSOR:
                if extra(m) is not None:
                    mine, ref = extra(m) - floor, lora - floor
                    rows.append(dict(target=f"{m}: extra peak over floor <= PEFT LoRA r=8 QKVO's",
                                     value=f"{mine / 2**20:.0f} MiB vs {ref / 2**20:.0f} MiB", met=mine <= ref))
    if inference:
        base = next((r for r in inference if r["name"] == "base"), None)
        for r in inference:
            if r["name"].startswith("lorta merged") and base:
                rows.append(dict(target="merged lorta inference == base (<= 1.02x)",
                                 value=round(r["vs_base"]["median"], 3), met=r["vs_base"]["median"] <= 1.02))
    return rows


# ----- report ------------------------------------------------------------------------------------
def markdown(result) -> str:
    env, reg = result["environment"], result["regime"]
    lines = [
        f"### train step, regime `{result['regime_name']}`",
        "",
        f"* machine: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']} (default); "
        f"device {env['device']}{' (' + env['gpu'] + ')' if env['gpu'] else ''}, dtype {result['dtype']}, "
        f"compile {result['compile']}",
        f"* versions: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"peft {env['peft']}, loretta {env['loretta']}, tenpeft {env['tenpeft']}"
        + (f" (commit {env['git']['commit']}{', tenpeft/ modified' if env['git']['tenpeft_modified'] else ''})"
           if env.get("git") else ""),
        f"* date {env['date']}; load average at start {env['loadavg_start']}, at end {result['loadavg_end']}",
        f"* model: {result['model']}; batch {reg['batch']} x {reg['seq']} tokens; {reg['warmup']} warm-up rounds, "
        f"{reg['rounds']} timed rounds x {reg['steps']} step(s) per method, round-robin (rotating order)",
        f"* step = forward + backward + AdamW.step + zero_grad; ratios are paired per round "
        f"(median [IQR] over rounds); peak memory: {result.get('memory_how') or 'not measured'}, "
        f"{result.get('memory_steps')} steps in a fresh process per method",
        "",
        "| method | impl | trainable | step median (s) | IQR (s) | CPU s | x PEFT LoRA | x floor | extra peak (MiB) "
        "| - floor (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floor_mem = result["memory"].get("floor", {}).get("peak_increase_bytes")
    for name, s in result["methods"].items():
        if "skipped" in s:
            lines.append(f"| {name} | {s['impl']} | – | skipped: {s['skipped']} | | | | | | |")
            continue
        vs = s["vs"]
        fmt = lambda q: "–" if q is None else f"{q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}]"
        mem = result["memory"].get(name, {})
        peak = mem.get("peak_increase_bytes")
        over = None if peak is None or floor_mem is None else peak - floor_mem
        lines.append(f"| {name} | {s['impl']} | {s['trainable']:,} | {s['wall']['median']:.4f} | "
                     f"{s['wall']['q1']:.4f}–{s['wall']['q3']:.4f} | {s['cpu']['median']:.3f} | "
                     f"{fmt(vs.get('peft_lora') or vs.get('peft_lora_qkvo'))} | {fmt(vs.get('floor'))} | "
                     f"{mib(peak) if peak is not None else mem.get('skipped', '–')} | "
                     f"{'–' if over is None else f'{over / 2**20:+,.0f}'} |")
    if result["methods"] and "peft_lora" not in result["methods"]:
        lines.append("")
        lines.append("(x PEFT LoRA here is against peft_lora_qkvo: PEFT LoRA r=8 on q, k, v, o)")
    if result.get("inference"):
        lines += ["", f"Inference (forward only, `torch.inference_mode`, eval), batch {reg['batch']} x {reg['seq']}:", "",
                  "| model | median (s) | IQR (s) | x base |", "|---|---:|---:|---:|"]
        for r in result["inference"]:
            q = r["vs_base"]
            lines.append(f"| {r['name']} | {r['wall']['median']:.4f} | {r['wall']['q1']:.4f}–{r['wall']['q3']:.4f} | "
                         f"{q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}] |")
    if result.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in result["targets"]:
            lines.append(f"| {t['target']} | {t['value']} | {'met' if t['met'] else 'MISSED'} |")
    return "\n".join(lines)


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", choices=sorted(REGIMES), default="throughput")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="base model dtype (adapters stay fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model (compiled in the warm-up)")
    p.add_argument("--methods", default=None, help="comma-separated subset (default: all of the regime)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default per regime)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default per regime)")
    p.add_argument("--steps", type=int, default=None, help="steps per method per round (default per regime)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-method memory subprocesses")
    p.add_argument("--memory-steps", type=int, default=None, help="train steps in each memory subprocess")
    p.add_argument("--no-inference", action="store_true", help="skip the base / merged / unmerged lorta timing")
    p.add_argument("--json", default=None, help="write the full result (raw samples included) here")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(args)

    regime = dict(REGIMES[args.regime])
    for k in ("warmup", "rounds", "steps"):
        if getattr(args, k) is not None:
            regime[k] = getattr(args, k)
    family = regime["family"]
    names = (args.methods.split(",") if args.methods else (BERT_METHODS if family == "bert" else LLAMA_METHODS))
    unknown = [n for n in names if n not in METHOD_SPECS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {sorted(METHOD_SPECS)}")
    device = check_device(args.device, args.dtype, args.compile)
    dtype = DTYPES[args.dtype]
    if args.compile:
        allow_recompiles(4 * len(names) + 8)
    env = environment(device)
    print(f"regime {args.regime}: {regime}; methods {names}", flush=True)

    base = make_base(family, dtype, device)
    model_desc = (f"{type(base).__name__}.from_config({type(base.config).__name__}: {base.config.num_hidden_layers} "
                  f"layers, hidden {base.config.hidden_size}, {base.config.num_attention_heads} heads, intermediate "
                  f"{base.config.intermediate_size}, vocab {base.config.vocab_size}; attention "
                  f"{base.config._attn_implementation}), dropout 0")
    runners, skipped = [], {}
    for name in names:
        try:
            runners.append(build_runner(name, base, family, regime, device, dtype, args.compile))
        except SkipMethod as err:
            skipped[name] = str(err)
        except Exception as err:  # noqa: BLE001
            skipped[name] = f"{type(err).__name__}: {err}"
        if name in skipped:
            print(f"  skip {name}: {skipped[name]}", flush=True)
    for prm in shared_weights(base).values():  # every method froze the weights it shares
        assert not prm.requires_grad, "a method made a shared base weight trainable"

    # warm-up (also checks that every method runs; a failing one is dropped with its reason)
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

    by_name = {r.name: r for r in runners}
    methods = {}
    for name in names:
        spec = METHOD_SPECS[name]
        if name in skipped:
            methods[name] = {"impl": spec.impl, "skipped": skipped[name], "note": spec.note}
            continue
        r = by_name[name]
        vs = {ref: paired_ratios(r, by_name.get(ref)) for ref in ("peft_lora", "peft_lora_qkvo", "peft_vera", "floor",
                                                                 "official_loretta_rep", "official_loretta_adp")
              if ref in by_name}
        methods[name] = {"impl": spec.impl, "note": spec.note, "trainable": r.trainable,
                         "wall": quantiles(r.samples), "cpu": quantiles(r.cpu), "vs": vs,
                         "samples": r.samples, "cpu_samples": r.cpu}
        print(f"  {name:22s} {methods[name]['wall']['median']:.4f} s", flush=True)

    inference = []
    if not args.no_inference:
        del runners, by_name
        gc.collect()
        try:
            inf = build_inference(base, family, regime, device, args.compile)
            run_rounds(inf, max(regime["warmup"] - 1, 1), regime["steps"], device, record=False)
            run_rounds(inf, regime["rounds"], regime["steps"], device)
            for r in inf:
                inference.append({"name": r.name, "wall": quantiles(r.samples), "vs_base": paired_ratios(r, inf[0]),
                                  "samples": r.samples})
            del inf
        except Exception as err:  # noqa: BLE001
            print(f"  inference timing failed: {type(err).__name__}: {err}", flush=True)
    del base
    gc.collect()

    memory, how = {}, None
    if not args.no_memory:
        print("peak memory, one fresh process per method:", flush=True)
        memory = measure_memory([n for n in names if n not in skipped], args)
        how = next((m["how"] for m in memory.values() if "how" in m), None)

    result = {"regime_name": args.regime, "regime": regime, "dtype": args.dtype, "compile": args.compile,
              "environment": env, "loadavg_end": loadavg(), "model": model_desc, "methods": methods,
              "memory": memory, "memory_how": how,
              "memory_steps": args.memory_steps or regime["memory_steps"], "inference": inference}
    result["targets"] = evaluate_targets(args.regime, methods, memory, inference)
    print()
    print(markdown(result))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
