"""The core stands alone: it works with the lab's dependencies unimportable, and no core module
imports the lab."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
import paths

PACKAGE = paths.PACKAGE
BLOCKED = ("datasets", "accelerate", "matplotlib", "pandas", "peft", "seaborn", "sklearn")  # tqdm: transformers needs it

CORE_USE = f"""
import sys

for name in {BLOCKED!r}:  # None in sys.modules: import raises ImportError, find_spec says absent
    sys.modules[name] = None
import json, os, tempfile, torch
from transformers import BertConfig, AutoModelForSequenceClassification
import tenpeft
from tenpeft import cli

config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=50)
ids = torch.randint(0, 50, (2, 5))
results = {{}}
for method in ("lora", "lorta", "loretta_rep", "vera"):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    before = model(input_ids=ids).logits
    tenpeft.inject(model, method)
    report = tenpeft.parameter_report(model)
    with tempfile.TemporaryDirectory() as folder:
        tenpeft.save_adapter(model, folder)
        torch.manual_seed(0)
        again = tenpeft.from_pretrained(AutoModelForSequenceClassification.from_config(config).eval(), folder)
        same = torch.allclose(again(input_ids=ids).logits, model(input_ids=ids).logits)
    results[method] = [report.trainable, bool(torch.allclose(before, model(input_ids=ids).logits, atol=1e-6)), same]
folder = tempfile.mkdtemp()
config.save_pretrained(folder)
status = cli.main(["params", folder, "--method", "lora", "--json"])
lab = sorted(m for m in sys.modules if m.startswith("tenpeft.lab"))
print(json.dumps({{"results": results, "cli": status, "lab_modules": lab}}))
"""


def test_the_core_works_without_the_lab_dependencies():
    done = subprocess.run([sys.executable, "-c", CORE_USE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["lab_modules"] == [] and out["cli"] in (0, None)
    for method, (trainable, identity, reloaded) in out["results"].items():
        assert trainable > 0 and identity and reloaded, method


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module or "") if x)
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_no_core_module_imports_the_lab():
    core = [p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts]
    offenders = {str(p.relative_to(PACKAGE)): [n for n in _imports(p) if n.startswith("tenpeft.lab")] for p in core}
    assert len(core) > 20 and not any(offenders.values()), offenders


def test_the_lab_says_which_extra_it_needs():
    code = ("import importlib.util, sys\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'datasets' else real(name, *a)\n"
            "import tenpeft.lab\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and 'tenpeft.lab needs datasets: pip install "tenpeft[studies]"' in done.stderr
