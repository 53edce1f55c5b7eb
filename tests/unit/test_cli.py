"""The ``tenpeft`` command line: ``main`` returns the exit status; output is captured with capsys."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig

import tenpeft
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME
from tenpeft import cli

LORTA_SHARED = 4 * (48 + 12 + 4 + 2 + 4)  # rank 4 CP over (d, d_H, H, L, M) = 280


@pytest.fixture
def config_dir(tmp_path):
    LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, vocab_size=101).save_pretrained(tmp_path)
    assert os.listdir(tmp_path) == ["config.json"]
    return str(tmp_path)


def test_params_config_dir_json(config_dir, capsys):
    assert cli.main(["params", config_dir, "--method", "lorta", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["model"] == config_dir and rows[0]["method"] == "lorta"
    assert rows[0]["components"]["shared_factors"] == LORTA_SHARED
    assert rows[0]["matches_formula"] is True and rows[0]["hyperparameters"] == {}


def test_params_preset_text(capsys):
    assert cli.main(["params", "roberta-base", "--method", "lorta"]) == 0
    out = capsys.readouterr().out
    assert "tenpeft parameter report: lorta" in out and "3,440" in out and "matches formula: True" in out


def test_build_on_meta_tasks():
    config = LlamaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                         vocab_size=101)
    assert type(cli.build_on_meta(config)).__name__ == "LlamaForCausalLM"
    assert type(cli.build_on_meta(config, "base")).__name__ == "LlamaModel"
    model = cli.build_on_meta(config, "seq-cls")
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.score.weight.is_meta


def test_params_set_and_rank(config_dir, capsys):
    argv = ["params", config_dir, "--method", "lorta", "--method", "lora", "--rank", "2", "--json",
            "--set", 'roles=["q","k"]', "--set", "alpha=1",
            "--set", "zero_factor=default"]
    assert cli.parse_sets(["roles=[\"q\"]", "bottleneck=32", "head=tt", "x=1.5"]) == \
        {"roles": ["q"], "bottleneck": 32, "head": "tt", "x": 1.5}
    # zero_factor (a plain string, not JSON) is LoRTA's alone: with two methods LoRA's row is "not applicable"
    assert cli.main(argv) == 0
    lorta, lora = json.loads(capsys.readouterr().out)
    assert lorta["hyperparameters"] == {"roles": ["q", "k"], "alpha": 1, "zero_factor": "default",
                                      "rank": 2}
    assert lorta["components"]["shared_factors"] == 2 * (48 + 12 + 4 + 2 + 2) and lorta["matches_formula"]
    assert "zero_factor" in lora["not_applicable"] and "components" not in lora


@pytest.mark.parametrize("argv, message", [
    (["params", "roberta-base", "--method", "nosuch"], "unknown method 'nosuch'"),
    (["params", "roberta-base", "--method", "lorta", "--set", "rank"], "bad --set 'rank'"),
    (["params", "roberta-base", "--method", "lorta", "--set", "rank=2", "--rank", "3"], "bad --set 'rank=3'"),
    (["params", "roberta-base", "--method", "lorta", "--set", "nosuch=1"], "no hyperparameter(s) ['nosuch']"),
    (["params", "/nonexistent/dir", "--method", "lorta"], "not a directory holding config.json"),
])
def test_params_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenpeft: error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_params_hub_failure_is_one_line(monkeypatch, capsys):
    def offline(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", offline)
    assert cli.main(["params", "some-org/some-model", "--method", "lora"]) == 2
    err = capsys.readouterr().err
    assert "could not be found locally or on the Hugging Face Hub" in err and "config.json" in err


def test_version_and_no_command(capsys):
    assert cli.main(["--version"]) == 0
    assert tenpeft.__version__ in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "params" in capsys.readouterr().err


# ---- inspect: an adapter directory written by hand in the tenpeft-adapter format ----------------------------

def write_adapter(folder, tensors=None, shapes=None):
    """A fake adapter: ``tensors`` {name: (tensor, component)}; ``shapes`` overrides shapes in the config."""
    tensors = tensors or {"tenpeft_shared.attn.factors.0": (torch.zeros(48, 4), "shared_factors"),
                          "tenpeft_shared.attn.factors.1": (torch.zeros(12, 4), "shared_factors"),
                          "model.norm.weight": (torch.ones(48, dtype=torch.bfloat16), "norms")}
    targets = [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"]
    config = {
        "format": "tenpeft-adapter", "format_version": 1, "tenpeft_version": "0.1.0", "method": "lorta",
        "hyperparameters": {"rank": 4, "roles": ["q", "k", "v", "o"], "format": "cp"}, "targets": targets,
        "base_model": {"class": "LlamaForCausalLM", "model_type": "llama", "name_or_path": "tiny-llama",
                       "dims": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                                "num_key_value_heads": 2, "head_dim": 12, "vocab_size": 101}},
        "frozen_random_stored": False,
        "tensors": {n: {"shape": list((shapes or {}).get(n, t.shape)), "dtype": str(t.dtype).removeprefix("torch."),
                        "component": c} for n, (t, c) in tensors.items()},
        "parameter_report": {"method": "lorta"},
    }
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CONFIG_NAME), "w") as f:
        json.dump(config, f)
    save_file({n: t for n, (t, _) in tensors.items()}, os.path.join(folder, WEIGHTS_NAME))
    return str(folder)


def test_inspect_summary(tmp_path, capsys):
    folder = write_adapter(tmp_path / "adapter")
    assert cli.main(["inspect", folder]) == 0
    out = capsys.readouterr().out
    for text in ("lorta", "LlamaForCausalLM", "llama", "tiny-llama", "hidden_size=48", "rank=4",
                 "targets:          8: model.layers.0.self_attn.q_proj", "(3 more)", "shared_factors",
                 "240", "norms", "288", "header matches config: yes"):
        assert text in out, text


def test_inspect_json(tmp_path, capsys):
    folder = write_adapter(tmp_path / "adapter")
    assert cli.main(["inspect", folder, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "lorta" and summary["num_targets"] == 8 and len(summary["targets"]) == 5
    assert summary["components"] == {"shared_factors": 48 * 4 + 12 * 4, "norms": 48} and summary["total"] == 288
    assert summary["trainable"] == 288
    assert summary["base_model"]["dims"]["head_dim"] == 12 and summary["hyperparameters"]["rank"] == 4
    assert summary["file_size"] == os.path.getsize(os.path.join(folder, WEIGHTS_NAME))
    assert summary["header_matches_config"] is True and summary["mismatches"] == []


def test_inspect_shape_mismatch(tmp_path, capsys):
    folder = write_adapter(tmp_path / "adapter", shapes={"tenpeft_shared.attn.factors.1": [12, 5]})
    assert cli.main(["inspect", folder]) == 1
    out = capsys.readouterr().out
    assert "header matches config: NO" in out and "tenpeft_shared.attn.factors.1: shape [12, 5]" in out
    assert cli.main(["inspect", folder, "--json"]) == 1
    mismatches = json.loads(capsys.readouterr().out)["mismatches"]
    assert len(mismatches) == 1 and "tenpeft_shared.attn.factors.1" in mismatches[0]


def test_inspect_missing_and_extra_tensor(tmp_path, capsys):
    folder = write_adapter(tmp_path / "adapter")
    save_file({"tenpeft_shared.attn.factors.0": torch.zeros(48, 4), "stray": torch.zeros(1)},
              os.path.join(folder, WEIGHTS_NAME))
    assert cli.main(["inspect", folder, "--json"]) == 1
    mismatches = "\n".join(json.loads(capsys.readouterr().out)["mismatches"])
    assert f"model.norm.weight: in {CONFIG_NAME} but not" in mismatches
    assert "stray: in the safetensors file but not" in mismatches


def test_inspect_truncated_safetensors(tmp_path, capsys):
    folder = write_adapter(tmp_path / "adapter")
    path = os.path.join(folder, WEIGHTS_NAME)
    with open(path, "r+b") as f:
        f.truncate(10)
    assert cli.main(["inspect", folder]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenpeft: error: ") and "truncated" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("breakage, message", [
    ("no_dir", "not found"),
    ("no_config", CONFIG_NAME),
    ("bad_json", "not valid JSON"),
    ("no_tensors", "not a tenpeft adapter config"),
    ("no_safetensors", "missing, truncated or not a safetensors file"),
])
def test_inspect_bad_input(tmp_path, capsys, breakage, message):
    folder = write_adapter(tmp_path / "adapter")
    config_path = os.path.join(folder, CONFIG_NAME)
    if breakage == "no_dir":
        folder = str(tmp_path / "nowhere")
    elif breakage == "no_config":
        os.remove(config_path)
    elif breakage in ("bad_json", "no_tensors"):
        with open(config_path, "w") as f:
            f.write("{not json" if breakage == "bad_json" else '{"format": "tenpeft-adapter"}')
    else:
        os.remove(os.path.join(folder, WEIGHTS_NAME))
    assert cli.main(["inspect", folder]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenpeft: error: ") and message in err and "Traceback" not in err
