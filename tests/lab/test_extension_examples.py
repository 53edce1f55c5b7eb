"""docs/extending.md's worked examples, each one user file in examples/extensions/, used from
outside the package: by name from studies/rank_ablation.py with --import, and (adapters) saved in
one process and reloaded in a fresh one, which is told which module to import without it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenpeft.state import CONFIG_NAME
import paths
from helpers import study_flags

ROOT = paths.ROOT
EXTENSIONS = ROOT / "examples" / "extensions"
STUDY = study_flags()
# module: (method, the study's extra flags, the method's arguments for the save/reload check (None: no
# adapter), the tiny model family it is checked on)
EXAMPLES = {
    "btd_format": ("lora", ["--ranks", "2", "--set", "lora.format=\"btd\""], {"rank": 2, "format": "btd"}, "bert"),
    "lorta_btd": ("lorta_btd", ["--ranks", "1"], {"rank": 1}, "bert"),
    "peft_dora": ("peft_dora", ["--ranks", "2"], None, None),
    "shared_ffn_tt": ("shared_ffn_tt", ["--ranks", "2"], {"rank": 2}, "llama"),
    "electra_family": ("lorta", ["--ranks", "1", "--model", "tiny-electra"], {"rank": 1}, "electra"),
}
FAMILY_ONLY = {"electra_family"}  # a family is data: a saved adapter cannot name the module that registered it

SAVE = """
import sys, torch, tenpeft
from tenpeft.plugins import import_plugins
from models import tiny_model, tiny_batch
import_plugins([sys.argv[1]])
model = tiny_model(sys.argv[5])
tenpeft.inject(model, sys.argv[2], **__import__("json").loads(sys.argv[3]))
with torch.no_grad():
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn_like(p))
tenpeft.save_adapter(model, sys.argv[4])
torch.save(model(**{k: v for k, v in tiny_batch(model).items() if k != "labels"}).logits, sys.argv[4] + ".pt")
"""
LOAD = """
import sys, torch, tenpeft
from tenpeft.plugins import import_plugins
from models import tiny_model, tiny_batch
try:
    tenpeft.from_pretrained(tiny_model(sys.argv[3]), sys.argv[2])
    print("LOADED WITHOUT IMPORT")
except (tenpeft.TenpeftError, KeyError) as err:
    print("WITHOUT:", err)
import_plugins([sys.argv[1]])
model = tenpeft.from_pretrained(tiny_model(sys.argv[3]), sys.argv[2])
logits = model(**{k: v for k, v in tiny_batch(model).items() if k != "labels"}).logits
print("MAXDIFF:", (logits - torch.load(sys.argv[2] + ".pt")).abs().max().item())
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXTENSIONS), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("module", list(EXAMPLES))
def test_the_example_runs_from_a_study_by_name(module, glue, tmp_path):
    method, extra, _, _ = EXAMPLES[module]
    argv = [str(ROOT / "studies" / "rank_ablation.py"), *STUDY, "--import", module, "--methods", method, *extra,
            "--data-dir", str(glue), "--results-dir", str(tmp_path / "res"), "--figures-dir", str(tmp_path / "fig")]
    first = _python(*argv)
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "rank_ablation").glob("*.json")]
    assert len(records) == 1 and records[0]["config"]["method"] == method and records[0]["status"] == "ok"
    assert "ran " in first.stdout
    again = _python(*argv)  # a fresh process with the same --import finds the record
    assert "kept " in again.stdout and "ran " not in again.stdout


@pytest.mark.parametrize("module", [m for m, (_, _, args, _) in EXAMPLES.items() if args is not None])
def test_the_example_adapter_reloads_in_a_fresh_process(module, tmp_path):
    method, _, args, family = EXAMPLES[module]
    folder = str(tmp_path / "adapter")
    _python("-c", SAVE, module, method, json.dumps(args), folder, family)
    plugins = json.loads(Path(folder, CONFIG_NAME).read_text())["plugins"]
    out = _python("-c", LOAD, module, folder, family).stdout
    assert "LOADED WITHOUT IMPORT" not in out and "WITHOUT:" in out
    if module not in FAMILY_ONLY:
        assert module in plugins and f"--import {module}" in out
    assert float(out.split("MAXDIFF:")[1]) < 1e-5
