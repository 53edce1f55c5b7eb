"""The ``tenpeft`` command line: parameter counts on the meta device and saved-adapter summaries.

    tenpeft params roberta-base --method lorta --rank 8      tenpeft params DIR_WITH_CONFIG_JSON --method all --json
    tenpeft inspect path/to/adapter [--json]
    tenpeft params roberta-base --method my_method --import my_pkg.my_method   (a method from a plugin module)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import tenpeft
from tenpeft.assign import parse_value
from tenpeft.io import adapter_files, read_adapter_config
from tenpeft.plugins import import_plugins, load_entry_points
from tenpeft.state import CONFIG_NAME
from tenpeft.presets import PRESETS, TASKS, build_on_meta, load_config
from tenpeft.report import saved_counts

# safetensors header dtype codes -> torch dtype names (as the adapter config writes them)
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
          "F8_E5M2": "float8_e5m2"}


class CliError(Exception):
    """Bad input on the command line: reported as one ``tenpeft: error:`` line, exit status 2."""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def parse_sets(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is parsed as JSON when it parses, else kept as a string."""
    hp = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or key in hp:
            raise CliError(f"bad --set {item!r}: expected KEY=VALUE, KEY a hyperparameter name given once "
                           f"(--rank R counts as rank=R)")
        hp[key] = parse_value(value)
    return hp


def cmd_params(args) -> int:
    if "all" in args.method:
        load_entry_points()  # "all" includes the methods of installed plugins
    methods = sorted(tenpeft.METHODS) if "all" in args.method else list(dict.fromkeys(args.method))
    for method in methods:
        tenpeft.get_method(method)  # unknown names fail before any model is built
    hp = parse_sets(args.set + ([f"rank={args.rank}"] if args.rank is not None else []))
    config = load_config(args.model)
    rows, texts = [], []
    for method in methods:
        row = {"model": args.model, "method": method, "hyperparameters": hp}
        try:
            report = tenpeft.parameter_report(tenpeft.inject(build_on_meta(config, args.task), method, **hp))
            rows.append({**row, **report.to_dict()})
            texts.append(str(report))
        except tenpeft.TenpeftError as err:  # with several methods, one that does not apply is a row
            if len(methods) == 1:
                raise
            rows.append({**row, "not_applicable": str(err)})
            texts.append(f"tenpeft parameter report: {method}\nnot applicable: {err}")
    if all("not_applicable" in r for r in rows):
        raise CliError(f"no method applies to {args.model}: {rows[0]['not_applicable']}")
    print(json.dumps(rows, indent=2) if args.json else f"model: {args.model}\n\n" + "\n\n".join(texts))
    return 0


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """``{name: {"shape", "dtype"}}`` from a safetensors header (memory-mapped; no tensor is read), and the file
    size. safe_open checks that the header parses and the offsets cover the file exactly."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            found = {n: {"shape": list(s.get_shape()), "dtype": DTYPES.get(s.get_dtype(), s.get_dtype())}
                     for n, s in slices.items()}
        return found, os.path.getsize(path)
    except (OSError, SafetensorError) as err:
        raise CliError(f"{path} is missing, truncated or not a safetensors file ({_first_line(err)})") from None


def compare(expected: dict, found: dict) -> list[str]:
    """Disagreements between the config's ``tensors`` and the safetensors header."""
    out = [f"{n}: in {CONFIG_NAME} but not in the safetensors file" for n in expected if n not in found]
    out += [f"{n}: in the safetensors file but not in {CONFIG_NAME}" for n in found if n not in expected]
    for name, key in ((n, k) for n in expected if n in found for k in ("shape", "dtype")):
        want, got = expected[name][key], found[name][key]
        if (list(want) if key == "shape" else want) != got:
            out.append(f"{name}: {key} {want} in {CONFIG_NAME}, {got} in the safetensors file")
    return out


def summarize_adapter(folder: str) -> dict:
    if not os.path.isdir(folder):
        raise CliError(f"adapter directory {folder!r} not found")
    config = read_adapter_config(folder, known_method=False)  # its structure checked; any method
    tensors, targets = config["tensors"], config["targets"]
    weights_path = adapter_files(folder)[1]
    found, size = read_safetensors_header(weights_path)
    mismatches = compare(tensors, found)
    return {"adapter_dir": folder, "method": config["method"], "tenpeft_version": config["tenpeft_version"],
            "format_version": config["format_version"], "base_model": config["base_model"],
            "hyperparameters": config["hyperparameters"], "num_targets": len(targets),
            "targets": targets[:5], **saved_counts(tensors),  # components, trainable, total
            "num_tensors": len(tensors), "frozen_random_stored": config["frozen_random_stored"],
            "plugins": config.get("plugins", []),
            "file": os.path.basename(weights_path), "file_size": size, "header_matches_config": not mismatches, "mismatches": mismatches}


def format_summary(s: dict) -> str:
    base = s["base_model"]
    dims = ", ".join(f"{k}={v}" for k, v in (base.get("dims") or {}).items())
    more = f", ... ({s['num_targets'] - len(s['targets'])} more)" if s["num_targets"] > len(s["targets"]) else ""
    hp = ", ".join(f"{k}={json.dumps(v)}" for k, v in s["hyperparameters"].items())
    lines = [f"tenpeft adapter: {s['adapter_dir']}",
             f"method:           {s['method']} (tenpeft {s['tenpeft_version']}, format v{s['format_version']})",
             f"base model:       {base.get('class')} ({base.get('model_type')}) from {base.get('name_or_path') or '?'}",
             f"dims:             {dims or 'unknown'}", f"hyperparameters:  {hp or 'none'}",
             f"targets:          {s['num_targets']}: {', '.join(s['targets'])}{more}",
             *([f"plugins:          {', '.join(s['plugins'])} (import before loading)"] if s["plugins"] else []),
             f"{'component':<18}{'parameters':>14}"]
    lines += [f"{name:<18}{count:>14,}" for name, count in s["components"].items()]
    lines += [f"{'trainable':<18}{s['trainable']:>14,}", f"{'total stored':<18}{s['total']:>14,}",
              f"file:             {s['file']}, {s['file_size']:,} bytes, {s['num_tensors']} tensors",
              f"header matches config: {'yes' if s['header_matches_config'] else 'NO'}"]
    return "\n".join(lines + [f"  mismatch: {m}" for m in s["mismatches"]])


def cmd_inspect(args) -> int:
    summary = summarize_adapter(args.adapter_dir)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if summary["header_matches_config"] else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenpeft", description="Parameter counts of tenpeft methods on the meta "
                                     "device, and summaries of saved adapters.")
    parser.add_argument("--version", action="version", version=f"tenpeft {tenpeft.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = argparse.ArgumentParser(add_help=False)
    plugins.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                         help="import MODULE first (repeatable): a plugin that registers methods, formats or "
                              "model families, e.g. my_pkg.my_method")
    p = sub.add_parser("params", parents=[plugins],
                       help="trainable parameters of methods on a model, built on the meta device")
    p.add_argument("model", metavar="MODEL",
                   help=f"a preset ({', '.join(PRESETS)}), a directory holding config.json, or a hub id")
    p.add_argument("--method", action="append", required=True, metavar="M",
                   help="a method name (repeatable) or 'all'; known: " + ", ".join(sorted(tenpeft.METHODS)))
    p.add_argument("--rank", type=int, metavar="R", help="passed as rank=R to each method")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other hyperparameter; VALUE is parsed as JSON when possible, e.g. roles='[\"q\",\"v\"]'")
    p.add_argument("--task", choices=["auto", *TASKS], default="auto",
                   help="model head: auto = seq-cls for bert/roberta/deberta-v2, causal-lm otherwise")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows")
    p.set_defaults(func=cmd_params)
    i = sub.add_parser("inspect", parents=[plugins],
                       help="summarise a saved adapter directory without loading its tensors")
    i.add_argument("adapter_dir", metavar="ADAPTER_DIR")
    i.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    i.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 adapter mismatch, 2 bad input)."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors, --help, --version
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        import_plugins(args.imports)
        return args.func(args)
    except (CliError, tenpeft.TenpeftError) as err:
        print(f"tenpeft: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `tenpeft params ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
