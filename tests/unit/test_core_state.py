"""One home for what an injection leaves on a model and what a save contains (``tenpeft.state``)."""
import ast
import json
import os

from safetensors.torch import load_file

import tenpeft
from models import tiny_model
import paths

PACKAGE = str(paths.PACKAGE)
FILE_NAMES = ("tenpeft_config.json", "tenpeft_model.safetensors")  # not PEFT's names (issue 14)


def test_the_state_module_holds_the_injection_state():
    from tenpeft import state

    model = tenpeft.inject(tiny_model("bert"), "lora")
    assert tenpeft.TenpeftState is state.TenpeftState
    assert isinstance(model.tenpeft_state, state.TenpeftState)
    assert state.state_of(model) is model.tenpeft_state
    assert (state.CONFIG_NAME, state.WEIGHTS_NAME) == FILE_NAMES


def test_a_save_writes_exactly_what_the_state_module_describes(tmp_path):
    from tenpeft.report import parameter_report
    from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME, adapter_config, adapter_tensors

    model = tenpeft.inject(tiny_model("roberta"), "loretta_adp")  # norms, a tt head and its stored base weight
    tenpeft.save_adapter(model, tmp_path)
    tensors = adapter_tensors(model)
    expected = adapter_config(model, tensors, False, parameter_report(model).to_dict())
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == json.loads(json.dumps(expected))
    assert set(load_file(tmp_path / WEIGHTS_NAME)) == set(tensors) == set(expected["tensors"])


def _string_literals(path):
    """Every string constant of a module except docstrings."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_adapter_file_names_have_one_home():
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, PACKAGE)
                found += [(rel, line) for line, text in _string_literals(path) if any(f in text for f in FILE_NAMES)]
    assert sorted(rel for rel, _ in found) == ["state.py", "state.py"], found
