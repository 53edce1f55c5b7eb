"""Where LoRTA's savings come from: trainable attention-update parameters, two tables.

**Equal CP rank r** (tenpeft's breakdown, not the paper's comparison), as modes are added to the tensor:

1. LoRA: every Q, K, V, O matrix of every layer its own rank-r CP (a matrix, ``r (d_out + d_in)``);
2. + heads: each matrix a 3rd-order CP ``(d, d_H, H)``;
3. + QKVO: one 4th-order CP ``(d, d_H, H, 4)`` per layer;
4. + layers: one 5th-order CP ``(d, d_H, H, L, 4)`` for the model (LoRTA).

Rows 1 and 4 are counted by injecting ``lora`` and ``lorta`` into the model built on the meta
device (nothing is allocated or downloaded); rows 2 and 3 by the CP format's own count; the
table and figure cover the attention update only (no head, no norms).

**Matched tensor rank** (the LoRTA paper's comparison, e.g. its 47.6% saving on LLaMA-2-7B): LoRA at
rank r on Q, K, V, O against LoRTA at CP rank R = r x L x 4, the number of rank-one terms of LoRA's
updates stacked as one tensor (``tenpeft.lab.reproduction.matched_rank_counts``; both injected).
The saving depends on the KV heads: LLaMA-2-7B (32) gives the paper's value (docs/reproduction.md),
the ``llama-7b-gqa`` preset (8, so smaller K/V LoRA) less.
Written to ``param_savings/matched_rank.json``. Trains nothing; seconds.

    python studies/param_savings.py
    python studies/param_savings.py --models roberta-base,llama-7b-gqa --ranks 1,4,16
"""
from __future__ import annotations

import argparse

import tenpeft
from tenpeft.lab.plots import param_savings_figure, save_figure
from tenpeft.presets import PRESETS, build_on_meta, preset_config
from tenpeft.lab.models import load_config, resolve_model
from tenpeft.lab.reproduction import matched_rank_counts
from tenpeft.atomic import atomic_write_json
from tenpeft.lab.study import script

ROLES = ("q", "k", "v", "o")


def _config(name: str):
    return preset_config(name) if name in PRESETS else load_config(resolve_model(name))


def _engine_count(config, method: str, rank: int) -> int:
    model = tenpeft.inject(build_on_meta(config), method, rank=rank, roles=ROLES, head="frozen")
    return tenpeft.parameter_report(model).trainable


def savings_rows(name: str, rank: int) -> list[dict]:
    """The four variants' counts for model ``name`` at CP rank ``rank``."""
    config = _config(name)
    s = tenpeft.discover(build_on_meta(config))
    cp = tenpeft.get_format("cp")
    count = lambda shape: cp.count(shape, cp.resolve_rank(shape, rank))  # noqa: E731
    per_head = [count((s.hidden_size, s.head_dim, s.num_heads if role in ("q", "o") else s.num_kv_heads))
                for role in ROLES]
    variants = [
        ("LoRA (per matrix)", _engine_count(config, "lora", rank)),
        ("+ heads mode", s.num_layers * sum(per_head)),
        ("+ QKVO mode", s.num_layers * count((s.hidden_size, s.head_dim, s.num_heads, len(ROLES)))),
        ("+ layers mode (LoRTA)", _engine_count(config, "lorta", rank)),
    ]
    first = variants[0][1]
    return [{"model": name, "rank": rank, "variant": v, "params": n, "savings_vs_lora": first / n,
             "shape": f"d={s.hidden_size} d_H={s.head_dim} H={s.num_heads} H_kv={s.num_kv_heads} L={s.num_layers}"}
            for v, n in variants]


def matched_rank_row(name: str, rank: int) -> dict:
    """LoRA at ``rank`` against LoRTA at the matched CP rank ``rank x L x 4`` for model ``name``."""
    c = matched_rank_counts(_config(name), rank)
    return {"model": name, "rank": rank, "lora": c["lora"], "lorta_rank": c["lorta_rank"], "lorta": c["lorta"],
            "saving_percent": c["saving"]}


def _print_tables(rows: list[dict], matched: list[dict]) -> None:
    print("Equal CP rank r: modes added one by one (tenpeft's breakdown)")
    print(f"{'model':<15}{'rank':>5}  {'variant':<24}{'params':>14}{'x fewer than LoRA':>19}")
    for row in rows:
        print(f"{row['model']:<15}{row['rank']:>5}  {row['variant']:<24}{row['params']:>14,}{row['savings_vs_lora']:>19.1f}")
    print("\nMatched tensor rank (the LoRTA paper's comparison): LoRA rank r on q,k,v,o vs LoRTA at CP rank r*L*4")
    print(f"{'model':<15}{'rank':>5}{'LoRA':>14}{'LoRTA rank':>12}{'LoRTA':>14}{'saving %':>10}")
    for m in matched:
        print(f"{m['model']:<15}{m['rank']:>5}{m['lora']:>14,}{m['lorta_rank']:>12,}{m['lorta']:>14,}"
              f"{m['saving_percent']:>10.1f}")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="minilm,roberta-base,llama-7b-gqa",
                        help=f"aliases, local paths, hub ids or presets {sorted(PRESETS)}")
    parser.add_argument("--ranks", default="4", help="comma-separated CP ranks (the figure uses the first)")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--figures-dir", default="figures")
    args = parser.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = [row for name in args.models.split(",") for r in ranks for row in savings_rows(name, r)]
    matched = [matched_rank_row(name, r) for name in args.models.split(",") for r in ranks]
    _print_tables(rows, matched)
    print(f"wrote {atomic_write_json(f'{args.results_dir}/param_savings/param_savings.json', rows)}")
    print(f"wrote {atomic_write_json(f'{args.results_dir}/param_savings/matched_rank.json', matched)}")
    for path in save_figure(param_savings_figure([r for r in rows if r["rank"] == ranks[0]]), args.figures_dir,
                            "param_savings"):
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    script(main)
