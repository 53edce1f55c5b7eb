"""Save -> load round trips for every method x family, and every way a load can be refused."""
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import tenpeft
from helpers import assert_untouched, fingerprint, logits, train_steps
from models import FAMILIES, tiny_batch, tiny_model

METHODS = sorted(tenpeft.METHODS)


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must never be used to load an adapter")

    for target in (pickle, torch):
        monkeypatch.setattr(target, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _trained(family, method, **kwargs):
    model = tenpeft.inject(tiny_model(family), method, **kwargs)
    batch = tiny_batch(model)
    train_steps(model, batch, steps=3)
    return model, batch


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_round_trip_into_a_fresh_base(family, method, tmp_path, no_pickle):
    model, batch = _trained(family, method)
    tenpeft.save_adapter(model, tmp_path)
    fresh = tenpeft.from_pretrained(tiny_model(family), tmp_path)
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6
    assert tenpeft.parameter_report(fresh).to_dict() == tenpeft.parameter_report(model).to_dict()
    # load_adapter into an already injected model (e.g. resuming) gives the same
    again = tenpeft.load_adapter(tenpeft.inject(tiny_model(family), method), tmp_path)
    assert (logits(again, batch) - logits(model, batch)).abs().max() <= 1e-6


def test_saved_files(tmp_path):
    model, _ = _trained("roberta", "loretta_adp")
    tenpeft.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["method"] == "loretta_adp" and config["tenpeft_version"] == tenpeft.__version__
    assert config["hyperparameters"]["rank"] == 5 and config["hyperparameters"]["seed"] == 0
    assert config["base_model"]["class"] == "RobertaForSequenceClassification"
    components = {d["component"] for d in config["tensors"].values()}
    assert components == {"factors", "norms", "head", "frozen_stored"}  # trained norms and head included
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert set(tensors) == set(config["tensors"])
    report = tenpeft.parameter_report(model)
    assert sum(t.numel() for t in tensors.values()) == report.trainable + report.frozen_stored
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("method", ["lorta", "vera"])
def test_shared_and_frozen_factors(method, tmp_path):
    model, batch = _trained("llama", method)
    tenpeft.save_adapter(model, tmp_path / "a")
    names = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["tensors"]
    shared = [n for n in names if n.startswith("tenpeft_shared.")]
    assert shared and len(shared) == len(set(shared))  # stored once
    assert all(names[n]["component"] != "seed_regenerable" for n in names)
    tenpeft.save_adapter(model, tmp_path / "b", store_frozen_random=True)
    stored = json.loads((tmp_path / "b" / "adapter_config.json").read_text())["tensors"]
    regenerable = [n for n, d in stored.items() if d["component"] == "seed_regenerable"]
    assert bool(regenerable) == (method == "vera")
    fresh = tenpeft.from_pretrained(tiny_model("llama"), tmp_path / "b")
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6


def _saved(tmp_path, family="bert", method="lorta"):
    model, _ = _trained(family, method)
    tenpeft.save_adapter(model, tmp_path)
    return tmp_path


def _edit_config(directory, edit):
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _other_size():
    from transformers import AutoModelForSequenceClassification, BertConfig

    return AutoModelForSequenceClassification.from_config(BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=101,
        num_labels=3))


BAD_LOADS = {
    "other architecture": (lambda d: None, lambda: tiny_model("roberta"), r"class: adapter 'BertForSequenceClassification'"),
    "other size": (lambda d: None, _other_size, r"hidden_size: adapter 48 vs model 64"),
    "missing weights": (lambda d: os.remove(d / "adapter_model.safetensors"), None, "adapter is incomplete"),
    "truncated weights": (lambda d: _truncate(d / "adapter_model.safetensors"), None, "truncated or damaged"),
    "missing config": (lambda d: os.remove(d / "adapter_config.json"), None, "not a tenpeft adapter directory"),
    "damaged config": (lambda d: (d / "adapter_config.json").write_text("{not json"), None, "not valid JSON"),
    "unknown method": (lambda d: _edit_config(d, lambda c: c.update(method="lorta_v9")), None,
                       "'lorta_v9'.*unknown to tenpeft"),
    "newer format": (lambda d: _edit_config(d, lambda c: c.update(format_version=99)), None, "upgrade tenpeft"),
    "unknown setting": (lambda d: _edit_config(d, lambda c: c["hyperparameters"].update(gamma=2)), None,
                        r"settings \['gamma'\]"),
    "hand-edited shapes": (lambda d: _edit_config(d, lambda c: c["tensors"][next(iter(c["tensors"]))].update(
        shape=[1, 2])), None, "disagree"),
    "hand-edited rank": (lambda d: _edit_config(d, lambda c: c["hyperparameters"].update(rank=5)), None,
                         "do not fit this injection"),
    "a PEFT directory": (lambda d: _edit_config(d, lambda c: c.update(format=None)), None,
                         "PeftModel.from_pretrained"),
}


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", sorted(BAD_LOADS))
def test_bad_loads_leave_the_model_untouched(case, tmp_path, no_pickle):
    damage, make_model, message = BAD_LOADS[case]
    directory = _saved(tmp_path)
    damage(directory)
    model = (make_model or (lambda: tiny_model("bert")))()
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match=message):
        tenpeft.from_pretrained(model, directory)
    assert_untouched(model, before)


def test_tensor_file_with_a_renamed_key_is_refused(tmp_path):
    directory = _saved(tmp_path)
    tensors = load_file(directory / "adapter_model.safetensors")
    name = next(iter(tensors))
    tensors["renamed." + name] = tensors.pop(name)
    save_file(tensors, directory / "adapter_model.safetensors")
    _edit_config(directory, lambda c: c["tensors"].update({"renamed." + name: c["tensors"].pop(name)}))
    model = tiny_model("bert")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match="do not fit this injection"):
        tenpeft.from_pretrained(model, directory)
    assert_untouched(model, before)


def test_load_adapter_refuses_other_settings(tmp_path):
    directory = _saved(tmp_path)
    model = tenpeft.inject(tiny_model("bert"), "lorta", rank=2)
    with pytest.raises(tenpeft.TenpeftError, match="other settings"):
        tenpeft.load_adapter(model, directory)
