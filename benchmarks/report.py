#!/usr/bin/env python
"""Print the Markdown tables of docs/performance.md from the JSON files the benchmarks wrote, or
(``--doc``) fill ``benchmarks/performance_template.md`` with them into ``docs/performance.md``.

    python benchmarks/report.py [benchmarks/measured]
    python benchmarks/report.py --doc
"""
from __future__ import annotations

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


def render(d) -> str:
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


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    here = os.path.dirname(os.path.abspath(__file__))
    folder = args[0] if args else os.path.join(here, "measured")
    tables = {}
    for sub in ("", "before_fixes", "repeat"):  # before_fixes/: the first runs, before the engine fixes
        path = os.path.join(folder, sub)
        for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
            if name.endswith(".json"):
                with open(os.path.join(path, name)) as fh:
                    tables[os.path.join(sub, name) if sub else name] = render(json.load(fh))
    if "--doc" in sys.argv:  # fill benchmarks/performance_template.md -> docs/performance.md
        with open(os.path.join(here, "performance_template.md")) as fh:
            text = fh.read()
        for name, table in tables.items():
            text = text.replace(f"@@{name}@@", table)
        text = text.replace("@@compile_sentence@@", compile_sentence(folder))
        text = text.replace("@@strided_add@@", strided_add_sentence(folder))
        assert "@@" not in text, "a placeholder has no result file"
        out = os.path.join(here, "..", "docs", "performance.md")
        with open(out, "w") as fh:
            fh.write(text)
        print(f"wrote {os.path.normpath(out)}")
        return
    for name, table in tables.items():
        print(f"<!-- {name} -->")
        print(table)
        print()


if __name__ == "__main__":
    main()
