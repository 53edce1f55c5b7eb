"""Trainable parameters of every method at real model sizes, without allocating any weights.

Builds each model on the meta device from its config (no download), injects every registered
method with its paper defaults, and prints the parameter report per component with the
closed-form check. ``--json PATH`` also writes the rows.

    python studies/param_table.py                       # RoBERTa-base, LLaMA-7B-like (GQA), GPT-2 dims
    python studies/param_table.py --models roberta-large --methods lorta loretta_rep lora
    python studies/param_table.py --config-dir path/with/config.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import transformers

import tenpeft
from tenpeft.presets import PRESETS, build_on_meta, load_config, preset_config
from tenpeft.lab.study import script

def rows_for(name: str, config, methods) -> list[dict]:
    rows = []
    for method in methods:
        try:
            model = tenpeft.inject(build_on_meta(config), method)
        except tenpeft.TenpeftError as err:  # e.g. bitfit on a model without biases
            rows.append({"model": name, "method": method, "not_applicable": str(err)})
            continue
        report = tenpeft.parameter_report(model)
        base = report.base_frozen + report.trainable + report.frozen_stored
        rows.append({"model": name, "method": method, **report.to_dict(),
                     "percent_of_base": 100.0 * report.trainable / base})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<15}{'method':<14}{'trainable':>15}{'factors':>13}{'shared':>9}{'norms':>9}{'head':>9}"
          f"{'% base':>10}  formula")
    for r in rows:
        if "not_applicable" in r:
            print(f"{r['model']:<15}{r['method']:<14}  n/a: {r['not_applicable'].split(';')[0]}")
            continue
        c = r["components"]
        print(f"{r['model']:<15}{r['method']:<14}{r['trainable']:>15,}{c['factors']:>13,}{c['shared_factors']:>9,}"
              f"{c['norms']:>9,}{c['head']:>9,}{r['percent_of_base']:>10.4f}  "
              f"{'ok' if r['matches_formula'] else 'MISMATCH'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["roberta-base", "llama-7b-gqa", "gpt2"],
                        choices=sorted(PRESETS))
    parser.add_argument("--config-dir", help="a directory holding a config.json (e.g. a hub snapshot)")
    parser.add_argument("--methods", nargs="+", default=sorted(tenpeft.METHODS))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()
    configs = {name: preset_config(name) for name in args.models}
    if args.config_dir:
        configs = {os.path.basename(os.path.normpath(args.config_dir)): load_config(args.config_dir)}
    rows = [row for name, config in configs.items() for row in rows_for(name, config, args.methods)]
    print_table(rows)
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as tmp:
            json.dump(rows, tmp, indent=2)
        os.replace(tmp.name, args.json)  # atomic: never a half-written results file


if __name__ == "__main__":
    script(main)
