"""Extensions from outside the package (``tenpeft.plugins``): a user module registers a method and a format;
the command line imports it with ``--import``; a saved adapter names it, and a fresh process that has not
imported it is told which module to import. Fresh processes run as subprocesses."""
import json
import os
import subprocess
import sys

import pytest

import tenpeft
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME
from models import tiny_model
from tenpeft import cli
from tenpeft.plugins import defining_modules, import_plugins
import paths

TESTS = str(paths.TESTS)
ROOT = os.path.dirname(TESTS)
PLUGIN = '''
"""A plugin: method 'bt' (LoRA over its own format 'mycp')."""
from dataclasses import dataclass

from tenpeft import Method, register_format, register_method
from tenpeft.formats import CP
from tenpeft.methods.per_target import LoraConfig, build_lora, lora_formula


class MyCP(CP):
    format_name = "mycp"


@dataclass
class BtConfig(LoraConfig):
    rank: int = 2
    format: str = "mycp"


register_format("mycp", MyCP)
register_method(Method("bt", BtConfig, build_lora, lora_formula, "parallel"))
'''
PRELUDE = '''
import json, sys
import torch
import tenpeft
from helpers import logits
from models import tiny_batch, tiny_model
from tenpeft.plugins import import_plugins
'''
SAVE = PRELUDE + '''
import_plugins(["my_ext"])
model = tenpeft.inject(tiny_model("llama"), "bt")
torch.manual_seed(5)
with torch.no_grad():
    for p in model.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * 0.1)
tenpeft.save_adapter(model, sys.argv[1])
print(json.dumps(logits(model, tiny_batch(model)).tolist()))
'''
LOAD = PRELUDE + '''
import_plugins(sys.argv[2:])
try:
    model = tenpeft.from_pretrained(tiny_model("llama"), sys.argv[1])
except tenpeft.TenpeftError as err:
    try:
        tenpeft.io.read_adapter_config(sys.argv[1])
        again = None
    except tenpeft.TenpeftError as read_error:
        again = str(read_error)
    print(json.dumps({"error": str(err), "read_error": again}))
    sys.exit(0)
print(json.dumps({"logits": logits(model, tiny_batch(model)).tolist(), "plugins_known": "bt" in tenpeft.METHODS}))
'''


def _run(args, path, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, TESTS, ROOT])}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_ext.py").write_text(PLUGIN)
    return folder


@pytest.fixture(scope="module")
def saved(plugin_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapter")
    done = _run(["-c", SAVE, str(directory)], [str(plugin_dir)])
    return directory, json.loads(done.stdout)


def _close(a, b):
    return max(abs(x - y) for x, y in zip(_flat(a), _flat(b))) <= 1e-6


def _flat(value):
    return [v for item in value for v in _flat(item)] if isinstance(value, list) else [value]


# ---- import_plugins ---------------------------------------------------------------------------------------

def test_import_plugins_returns_the_modules_imported():
    assert import_plugins(None) == [] and import_plugins([]) == []
    assert import_plugins(["json", "email.utils", "json"]) == ["json", "email.utils"]


@pytest.mark.parametrize("name, message", [
    ("no_such_plugin_module", r"cannot import plugin module 'no_such_plugin_module' \(ModuleNotFoundError: No "
                              r"module named 'no_such_plugin_module'\)"),
    ("json.no_such_part", r"cannot import plugin module 'json.no_such_part'"),
    ("../my_ext", r"plugin '../my_ext' is not a module name"),
    ("", "is not a module name"),
])
def test_import_plugins_names_the_module_it_cannot_import(name, message):
    with pytest.raises(tenpeft.TenpeftError, match=message):
        import_plugins([name])


def test_a_plugin_whose_own_import_fails_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_ext.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(tenpeft.TenpeftError, match=r"'broken_ext' \(ModuleNotFoundError: No module named "
                                                   r"'no_such_dependency_xyz'\)"):
        import_plugins(["broken_ext"])


def test_defining_modules_leaves_out_tenpeft_and_main():
    def local():
        pass

    local.__module__ = "__main__"
    assert defining_modules([tenpeft.inject, tenpeft.Method, json.dumps, local, "x", json.JSONDecoder]) == \
        ["json", "json.decoder"]


# ---- what a save records ----------------------------------------------------------------------------------

def test_a_built_in_method_records_no_plugins(tmp_path):
    tenpeft.save_adapter(tenpeft.inject(tiny_model("bert"), "lora"), tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["plugins"] == []


def test_an_adapter_without_the_plugins_field_still_loads(tmp_path):
    tenpeft.save_adapter(tenpeft.inject(tiny_model("bert"), "lora"), tmp_path)
    path = tmp_path / CONFIG_NAME
    config = json.loads(path.read_text())
    del config["plugins"]  # as tenpeft wrote it before plugins were recorded
    path.write_text(json.dumps(config))
    tenpeft.from_pretrained(tiny_model("bert"), tmp_path)
    config["plugins"] = "my_ext"
    path.write_text(json.dumps(config))
    with pytest.raises(tenpeft.TenpeftError, match="field 'plugins' must be a list, got string"):
        tenpeft.from_pretrained(tiny_model("bert"), tmp_path)


def test_the_saved_adapter_names_its_plugin_module(saved, capsys):
    directory, _ = saved
    config = json.loads((directory / CONFIG_NAME).read_text())
    assert config["method"] == "bt" and config["hyperparameters"]["format"] == "mycp"
    assert config["plugins"] == ["my_ext"]
    assert cli.main(["inspect", str(directory)]) == 0  # inspect needs no plugin
    assert "plugins:          my_ext (import before loading)" in capsys.readouterr().out


# ---- fresh processes --------------------------------------------------------------------------------------

def test_the_cli_uses_a_plugin_method_with_import(plugin_dir, tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, vocab_size=101).save_pretrained(tmp_path)
    argv = ["-m", "tenpeft.cli", "params", str(tmp_path), "--method", "bt", "--json"]
    without = _run(argv, [str(plugin_dir)], check=False)
    assert without.returncode == 2 and "unknown method 'bt'" in without.stderr
    rows = json.loads(_run([*argv, "--import", "my_ext"], [str(plugin_dir)]).stdout)
    assert rows[0]["method"] == "bt" and rows[0]["matches_formula"] is True
    assert rows[0]["components"]["factors"] == 2 * (2 * (48 + 48) + 2 * (24 + 48))  # 2 layers: q 48x48, v 24x48
    assert cli.main([*argv[2:], "--import", "json", "--import", "nosuch_ext"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenpeft: error: cannot import plugin module 'nosuch_ext' (ModuleNotFoundError")
    assert err.count("\n") == 1


def test_a_fresh_process_is_told_which_module_to_import(saved, plugin_dir):
    directory, _ = saved
    result = json.loads(_run(["-c", LOAD, str(directory)], [str(plugin_dir)]).stdout)
    expected = ("was saved by method 'bt' registered in module 'my_ext'; import it first "
                "(tenpeft.plugins.import_plugins(['my_ext']) or --import my_ext)")
    assert expected in result["error"] and expected in result["read_error"]


def test_a_fresh_process_loads_the_adapter_after_importing_the_plugin(saved, plugin_dir):
    directory, trained = saved
    result = json.loads(_run(["-c", LOAD, str(directory), "my_ext"], [str(plugin_dir)]).stdout)
    assert result["plugins_known"] and _close(result["logits"], trained)


def test_a_missing_format_plugin_is_named_too(saved, tmp_path):
    """The method is known here (LoRA) but its format comes from the plugin, never imported in this process."""
    directory, _ = saved
    config = json.loads((directory / CONFIG_NAME).read_text())
    config["method"] = "lora"
    other = tmp_path / "adapter"
    other.mkdir()
    (other / CONFIG_NAME).write_text(json.dumps(config))
    (other / WEIGHTS_NAME).write_bytes((directory / WEIGHTS_NAME).read_bytes())
    assert "my_ext" not in sys.modules and "mycp" not in tenpeft.FORMATS
    model = tiny_model("llama")
    with pytest.raises(tenpeft.TenpeftError) as info:
        tenpeft.from_pretrained(model, other)
    assert str(info.value).startswith("unknown tensor format 'mycp'")
    assert str(info.value).endswith("; the adapter was saved with plugin module(s) 'my_ext', not imported here: import "
                                    "them first (tenpeft.plugins.import_plugins(['my_ext']) or --import my_ext)")
    assert not hasattr(model, "tenpeft_state")


# ---- entry points (group tenpeft.plugins) -----------------------------------------------------------------

def _distribution(folder, value):
    """An installed distribution (a dist-info folder on sys.path) declaring one tenpeft.plugins entry point."""
    info = folder / "my_ext_dist-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-ext-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tenpeft.plugins]\nbt = {value}\n")
    return folder


ENTRY = PRELUDE + '''
from tenpeft import cli
before = "bt" in tenpeft.METHODS
method = tenpeft.get_method("bt").name
model = tenpeft.from_pretrained(tiny_model("llama"), sys.argv[1])
status = cli.main(["params", "smollm2-135m", "--method", "bt", "--json"])
print(json.dumps({"before": before, "method": method, "cli": status,
                  "logits": logits(model, tiny_batch(model)).tolist()}))
'''


def test_an_installed_entry_point_is_loaded_when_a_name_is_not_found(saved, plugin_dir, tmp_path):
    directory, trained = saved
    site = _distribution(tmp_path / "site", "my_ext")
    done = _run(["-c", ENTRY, str(directory)], [str(site), str(plugin_dir)])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] is False and result["method"] == "bt" and result["cli"] == 0  # lazily, on the miss
    assert _close(result["logits"], trained)


def test_a_broken_entry_point_is_named(tmp_path):
    site = _distribution(tmp_path / "site", "no_such_ext_module")
    code = ("import tenpeft\ntry:\n    tenpeft.get_method('zz')\nexcept tenpeft.TenpeftError as err:\n    print(err)\n"
            "print(tenpeft.get_method('lora').name)")
    out = _run(["-c", code], [str(site)]).stdout
    assert "entry point 'bt' = 'no_such_ext_module' (group 'tenpeft.plugins') failed to load " \
           "(ModuleNotFoundError: No module named 'no_such_ext_module')" in out
    assert out.strip().endswith("lora")  # a registered name needs no plugin
