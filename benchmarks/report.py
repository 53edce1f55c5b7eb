#!/usr/bin/env python
"""Print the Markdown tables of docs/performance.md from the JSON files the benchmarks wrote, or
(``--doc``) fill ``benchmarks/performance_template.md`` with them into ``docs/performance.md``.

    python benchmarks/report.py [benchmarks/measured]
    python benchmarks/report.py --doc
    python benchmarks/report.py --gpu DIR    # only the GPU section, from the out dir of benchmarks/gpu.sh

The GPU section (placeholder ``@@gpu@@``) comes from ``benchmarks/measured/gpu/`` (what
``benchmarks/gpu.sh`` writes there); without its ``summary.json`` it says the GPU runs were not made.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_targets import markdown  # noqa: E402
from contraction import pick_winner, verdict  # noqa: E402


def q(s, digits=3):
    return "–" if not s else f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}–{s['q3']:.{digits}f}]"


def whatif_table(d):
    env, reg = d["environment"], d["regime"]
    out = [f"#### what-if, regime `{d['regime_name']}`", "",
           f"{env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, {env['date']}; batch {reg['batch']} x "
           f"{reg['seq']}; {reg['warmup']} warm-up rounds, {reg['rounds']} timed rounds x {reg['steps']} steps; "
           f"paired ratios, median [IQR] over rounds", "",
           "| method | step median (s) | x PEFT LoRA (q,v) | x PEFT LoRA (q,k,v,o) | x floor | fixed / unfixed | x official |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        official = r.get("vs_official") or r.get("vs_official_adp")
        name = r.get("official") or ("official_loretta_adp" if r.get("vs_official_adp") else "")
        out.append(f"| {r['method']} | {r['wall']['median']:.4f} | {q(r['vs_peft_lora'])} | "
                   f"{q(r.get('vs_peft_lora_qkvo'))} | {q(r['vs_floor'])} | {q(r['vs_unfixed'])} | "
                   f"{(q(official) + ' (' + name + ')') if official else '–'} |")
    return "\n".join(out)


def contraction_table(d):
    env = d["environment"]
    out = [f"{env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} ({env['torch_threads']} threads), "
           f"{env['date']}. Forward + backward of `y0 + ΔW x` (gradients for the factors and `x`), median "
           f"[IQR] in microseconds.", "",
           "| shape | tokens | factorized | factorized + contiguous | reconstruct + matmul | engine module | "
           "winner: factorized vs reconstruct (ratio of medians) | engine does | factorized output strides |",
           "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in d["results"]:
        s = r["stats"]
        f = lambda k: f"{s[k]['median'] * 1e6:,.0f} [{s[k]['q1'] * 1e6:,.0f}–{s[k]['q3'] * 1e6:,.0f}]"
        r = dict(r, winner=pick_winner(s))
        out.append(f"| {r['case']} | {r['tokens']} | {f('factorized')} | {f('factorized+contig')} | "
                   f"{f('reconstruct')} | {f('engine')} | {r['winner']} ({r['winner_margin']:.2f}x) | "
                   f"{r['engine_uses']} {verdict(r)} | {tuple(r['strides']['factorized'])} |")
    return "\n".join(out)


def merged_table(d):
    out = [f"#### merged inference what-if, regime `{d['regime_name']}` ({d['environment']['date']})", "",
           "| model | median (s) | x base |", "|---|---:|---:|"]
    for r in d["merged_inference"]:
        out.append(f"| {r['name']} | {r['wall']['median']:.4f} | {q(r['vs_base'])} |")
    return "\n".join(out)


def packed_doc(d) -> str:
    """packed_runs.py's result: its settings line and one row per pack size."""
    env, st = d["environment"], d["settings"]
    head = (f"{env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, {env['date']}, git "
            f"{(env.get('git') or {}).get('commit', '?')}; model `{st['model']}` on {st['device']}, {st['steps']} steps "
            f"of batch {st['batch']} x {st['seq']} tokens per run, methods cycling {', '.join(d['methods'])}; "
            f"peak memory: {d['peak_memory']}; wall from launch to exit of the processes.")
    return "\n".join([head, ""] + packed_table(d))


def render(d) -> str:
    if "settings" in d and "rows" in d:
        return packed_doc(d)
    if "methods" in d:
        return markdown(d)
    if "rows" in d:
        return whatif_table(d)
    if "results" in d:
        return contraction_table(d)
    if "merged_inference" in d:
        return merged_table(d)
    return ""  # layout_add.json: used in the text only


def compile_sentence(folder) -> str:
    """The one-line summary of the CPU --compile latency run, if it is there."""
    path = os.path.join(folder, "repeat", "latency_compile_cpu.json")
    if not os.path.exists(path):
        return "(the `--compile` run was not made)"
    with open(path) as fh:
        d = json.load(fh)
    m = d["methods"]
    parts = [f"`{n}` {m[n]['vs']['peft_lora']['median']:.3f}" for n in m
             if "vs" in m[n] and n != "peft_lora" and m[n]["vs"].get("peft_lora")]
    return (f"in a CPU run with `--compile` (latency regime, {d['regime']['rounds']} rounds x {d['regime']['steps']} "
            f"steps, {d['environment']['date']}, `benchmarks/measured/repeat/latency_compile_cpu.json`) the ratios to "
            f"PEFT LoRA (also compiled) are " + ", ".join(parts) + ".")


def strided_add_sentence(folder) -> str:
    for name in ("contraction.json", "layout_add.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path) as fh:
                d = json.load(fh)
            if "strided_add" in d:
                c, t = d["strided_add"]["contiguous"], d["strided_add"]["transposed"]
                return (f"{t['median'] * 1e3:.2f} ms with the transposed operand against {c['median'] * 1e3:.2f} ms with "
                        f"a row-major one of the same values (`contraction.py`, `benchmarks/measured/{name}`, "
                        f"{d['environment']['date']}; median of 200)")
    return "(not measured)"


# ----- the GPU section (benchmarks/gpu.sh) -----------------------------------------------------------
# the train_step.py results gpu.sh writes, in the order they are shown
GPU_RUNS = [("throughput_bf16.json", "throughput, bf16, eager"),
            ("throughput_bf16_compile.json", "throughput, bf16, torch.compile"),
            ("latency_bf16.json", "latency, bf16, eager"),
            ("latency_bf16_compile.json", "latency, bf16, torch.compile"),
            ("llama7b-slice_bf16.json", "LLaMA-7B slice, bf16, eager, peak memory by torch.cuda.max_memory_allocated")]
NOT_MEASURED = ("**Not yet measured on a GPU**: `benchmarks/measured/gpu/` holds no results of `benchmarks/gpu.sh`. "
                "On a CUDA machine: `bash benchmarks/gpu.sh` (its step limits add up to under 10 minutes), then `python benchmarks/report.py "
                "--doc`; see [benchmarks/README.md](../benchmarks/README.md#on-a-gpu).")


def _load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def gpu_environment(env, summary) -> list[str]:
    """The machine and versions of a gpu.sh run (env.json), and whether it was a CPU dry run."""
    smi = "; ".join(env.get("nvidia_smi") or []) or "nvidia-smi: none"
    lines = [f"* GPU: {env.get('gpu') or 'none (torch sees no CUDA device)'} ({smi}); torch {env['torch']}, "
             f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, transformers {env['transformers']}, "
             f"peft {env['peft']}, python {env['python']}",
             f"* date {env['date']}" + (f", tenpeft commit {env['git']['commit']}"
                                         + (" (tenpeft/ modified)" if env['git']['tenpeft_modified'] else "")
                                         if env.get("git") else "")]
    if summary["dry_run"]:
        lines.insert(0, "**Dry run on the CPU (`gpu.sh --dry-run`: toy model sizes, one step): its numbers "
                        "mean nothing; it only checks that the scripts run and write their results.**")
        lines.insert(1, "")
    return lines


def gpu_steps_table(summary) -> list[str]:
    lines = ["| step | exit status | seconds | limit (s) |", "|---|---:|---:|---:|"]
    for s in summary["steps"]:
        rc = s.get("note") or (f"{s['rc']} (timed out)" if s.get("timed_out") else s["rc"])
        seconds = "–" if s["seconds"] is None else f"{s['seconds']:.1f}"
        lines.append(f"| {s['step']} | {rc} | {seconds} | {s.get('limit_s') or s['budget_s']} |")
    return lines


def packed_table(d) -> list[str]:
    """packed_runs.py's result: a table of its rows' scalar fields, where it has rows."""
    rows = next((d[k] for k in ("rows", "results", "runs") if isinstance(d.get(k), list)), None)
    if not rows or not all(isinstance(r, dict) for r in rows):
        return ["`packed.json` is there, but report.py does not know its layout (no list of rows under "
                "`rows`, `results` or `runs`)."]
    keys = [k for k in rows[0] if all(not isinstance(r.get(k), (dict, list)) for r in rows)]
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return (["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            + ["| " + " | ".join(cell(r.get(k, "–")) for k in keys) + " |" for r in rows])


def gpu_section(folder) -> str:
    """The GPU section of docs/performance.md from a gpu.sh out dir; the not-measured note without one."""
    summary, env = _load(folder, "summary.json"), _load(folder, "env.json")
    if summary is None or env is None:
        return NOT_MEASURED
    lines = gpu_environment(env, summary) + ["", "Steps of `benchmarks/gpu.sh` (`summary.json`):", ""]
    lines += gpu_steps_table(summary)
    for name, title in GPU_RUNS:
        d = _load(folder, name)
        lines += ["", f"**{title}** (`{name}`):", ""]
        lines += [markdown(d)] if d is not None else ["(no result: see the step's log in `logs/`)"]
    packed = _load(folder, "packed.json")
    lines += ["", "### packed runs (`packed.json`)", ""]
    lines += packed_table(packed) if packed is not None else ["(no result: `benchmarks/packed_runs.py` absent or failed)"]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=None, help="the results folder (default benchmarks/measured)")
    p.add_argument("--doc", action="store_true", help="write docs/performance.md from performance_template.md")
    p.add_argument("--gpu", default=None, metavar="DIR", help="print only the GPU section, from gpu.sh's out dir DIR")
    return p.parse_args(argv)


def read_tables(folder) -> dict[str, str]:
    tables = {}
    for sub in ("", "before_fixes", "repeat"):  # before_fixes/: the first runs, before the engine fixes
        path = os.path.join(folder, sub)
        for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
            if name.endswith(".json"):
                with open(os.path.join(path, name)) as fh:
                    tables[os.path.join(sub, name) if sub else name] = render(json.load(fh))
    return tables


def write_doc(here, folder, tables) -> None:
    """Fill benchmarks/performance_template.md -> docs/performance.md."""
    with open(os.path.join(here, "performance_template.md")) as fh:
        text = fh.read()
    for name, table in tables.items():
        text = text.replace(f"@@{name}@@", table)
    text = text.replace("@@compile_sentence@@", compile_sentence(folder))
    text = text.replace("@@strided_add@@", strided_add_sentence(folder))
    text = text.replace("@@gpu@@", gpu_section(os.path.join(folder, "gpu")))
    assert "@@" not in text, "a placeholder has no result file"
    out = os.path.join(here, "..", "docs", "performance.md")
    with open(out, "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.normpath(out)}")


def main(argv=None):
    args = parse_args(argv)
    if args.gpu:
        print(gpu_section(args.gpu))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    folder = args.folder or os.path.join(here, "measured")
    tables = read_tables(folder)
    if args.doc:
        write_doc(here, folder, tables)
        return
    for name, table in tables.items():
        print(f"<!-- {name} -->")
        print(table)
        print()


if __name__ == "__main__":
    main()
