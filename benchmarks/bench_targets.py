"""The issue-5 targets of a ``train_step.py`` result (met / missed) and the Markdown tables of
that result (``train_step.py`` prints them; ``report.py`` renders them from the saved JSON)."""
from __future__ import annotations

from bench_methods import PARALLEL, SHARED_TENSOR
from common import mib


# ----- targets (issue 5) ------------------------------------------------------------------------
def _ratio(stats, name, ref):
    """The median paired ratio of ``name`` to ``ref``, or None where either was not timed."""
    s = stats.get(name, {}).get("vs", {}).get(ref)
    return None if s is None else s["median"]


def speed_targets(regime_name, stats) -> list[dict]:
    """Throughput / latency: the parallel-update methods against PEFT LoRA, like-for-like pairs
    (information) and the tenpeft LoRETTA methods against the official package."""
    rows = []
    limit = 1.02 if regime_name == "throughput" else 1.05
    for m in PARALLEL:
        r = _ratio(stats, m, "peft_lora")
        if r is not None:
            rows.append(dict(target=f"{m} <= {limit}x PEFT LoRA", value=round(r, 3), met=r <= limit))
    for mine, theirs in (("vera", "peft_vera"), ("lorta", "peft_lora_qkvo")):  # like for like (information)
        r = _ratio(stats, mine, theirs)
        if r is not None:
            rows.append(dict(target=f"(info) {mine} vs {theirs}", value=round(r, 3), met=r <= limit))
    return rows + official_targets(regime_name, stats)


def official_targets(regime_name, stats) -> list[dict]:
    """tenpeft's LoRETTA methods against the official package's."""
    rows = []
    if regime_name == "throughput":
        r = _ratio(stats, "loretta_adp", "official_loretta_adp")
        if r is not None:
            rows.append(dict(target="loretta_adp <= 1.02x official LoRETTA_adp", value=round(r, 3), met=r <= 1.02))
    else:
        for mine, theirs in (("loretta_rep", "official_loretta_rep"), ("loretta_rep+norms", "official_loretta_rep"),
                             ("loretta_adp", "official_loretta_adp")):
            r = _ratio(stats, mine, theirs)
            if r is not None:
                rows.append(dict(target=f"{mine} faster than {theirs}", value=round(r, 3), met=r < 1.0))
    return rows


def memory_targets(memory) -> list[dict]:
    """LLaMA slice: the shared-tensor methods' extra peak over the floor against PEFT LoRA r=8 QKVO's."""
    rows = []

    def extra(n):
        return memory.get(n, {}).get("peak_increase_bytes")
    floor, lora = extra("floor"), extra("peft_lora_qkvo")
    if floor is not None and lora is not None:
        for m in SHARED_TENSOR:
            if extra(m) is not None:
                mine, ref = extra(m) - floor, lora - floor
                rows.append(dict(target=f"{m}: extra peak over floor <= PEFT LoRA r=8 QKVO's",
                                 value=f"{mine / 2**20:.0f} MiB vs {ref / 2**20:.0f} MiB", met=mine <= ref))
    return rows


def inference_targets(inference) -> list[dict]:
    """Merged lorta inference against the plain base."""
    rows = []
    base = next((r for r in inference if r["name"] == "base"), None)
    for r in inference:
        if r["name"].startswith("lorta merged") and base:
            rows.append(dict(target="merged lorta inference == base (<= 1.02x)",
                             value=round(r["vs_base"]["median"], 3), met=r["vs_base"]["median"] <= 1.02))
    return rows


def evaluate_targets(regime_name, stats, memory, inference) -> list[dict]:
    rows = []
    if regime_name in ("throughput", "latency"):
        rows += speed_targets(regime_name, stats)
    if regime_name == "llama7b-slice" and memory:
        rows += memory_targets(memory)
    if inference:
        rows += inference_targets(inference)
    return rows


# ----- report ------------------------------------------------------------------------------------
def _fmt(q) -> str:
    """median [q1–q3] of a ratio, or – where there is none."""
    return "–" if q is None else f"{q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}]"


def header(result) -> list[str]:
    """Title and the bullet list of machine, versions, date, model and method."""
    env, reg = result["environment"], result["regime"]
    return [
        f"### train step, regime `{result['regime_name']}`",
        "",
        f"* machine: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']} (default); "
        f"device {env['device']}{' (' + env['gpu'] + ')' if env['gpu'] else ''}, dtype {result['dtype']}, "
        f"compile {result['compile']}"
        + (f" (backend {result['compile_backend']})" if result.get("compile_backend") not in (None, "inductor") else ""),
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
    ]


def methods_table(result) -> list[str]:
    """One row per method: time, ratios, extra peak memory (or why it was skipped)."""
    lines = [
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
        mem = result["memory"].get(name, {})
        peak = mem.get("peak_increase_bytes")
        over = None if peak is None or floor_mem is None else peak - floor_mem
        lines.append(f"| {name} | {s['impl']} | {s['trainable']:,} | {s['wall']['median']:.4f} | "
                     f"{s['wall']['q1']:.4f}–{s['wall']['q3']:.4f} | {s['cpu']['median']:.3f} | "
                     f"{_fmt(vs.get('peft_lora') or vs.get('peft_lora_qkvo'))} | {_fmt(vs.get('floor'))} | "
                     f"{mib(peak) if peak is not None else mem.get('skipped', '–')} | "
                     f"{'–' if over is None else f'{over / 2**20:+,.0f}'} |")
    if result["methods"] and "peft_lora" not in result["methods"]:
        lines.append("")
        lines.append("(x PEFT LoRA here is against peft_lora_qkvo: PEFT LoRA r=8 on q, k, v, o)")
    return lines


def inference_table(result) -> list[str]:
    reg = result["regime"]
    lines = ["", f"Inference (forward only, `torch.inference_mode`, eval), batch {reg['batch']} x {reg['seq']}:", "",
             "| model | median (s) | IQR (s) | x base |", "|---|---:|---:|---:|"]
    for r in result["inference"]:
        q = r["vs_base"]
        lines.append(f"| {r['name']} | {r['wall']['median']:.4f} | {r['wall']['q1']:.4f}–{r['wall']['q3']:.4f} | "
                     f"{q['median']:.3f} [{q['q1']:.3f}–{q['q3']:.3f}] |")
    return lines


def targets_table(result) -> list[str]:
    lines = ["", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'met' if t['met'] else 'MISSED'} |")
    return lines


def markdown(result) -> str:
    lines = header(result) + [""] + methods_table(result)
    if result.get("inference"):
        lines += inference_table(result)
    if result.get("targets"):
        lines += targets_table(result)
    return "\n".join(lines)
