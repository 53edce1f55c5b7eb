"""Save -> load round trips for every method x family, and every way a load can be refused."""
import json
import os
import pickle
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tenpeft
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME
from helpers import assert_untouched, fingerprint, logits, trained
from models import FAMILIES, tiny_model
from tenpeft.placements import ParallelUpdate

METHODS = sorted(tenpeft.METHODS)


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must never be used to load an adapter")

    for target in (pickle, torch):
        monkeypatch.setattr(target, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_round_trip_into_a_fresh_base(family, method, tmp_path, no_pickle):
    model, batch = trained(family, method)
    tenpeft.save_adapter(model, tmp_path)
    fresh = tenpeft.from_pretrained(tiny_model(family), tmp_path)
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6
    assert tenpeft.parameter_report(fresh).to_dict() == tenpeft.parameter_report(model).to_dict()
    # load_adapter into an already injected model (e.g. resuming) gives the same
    again = tenpeft.load_adapter(tenpeft.inject(tiny_model(family), method), tmp_path)
    assert (logits(again, batch) - logits(model, batch)).abs().max() <= 1e-6


def test_saved_files(tmp_path):
    model, _ = trained("roberta", "loretta_adp")
    tenpeft.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["method"] == "loretta_adp" and config["tenpeft_version"] == tenpeft.__version__
    assert config["hyperparameters"]["rank"] == 5 and config["hyperparameters"]["seed"] == 0
    assert config["base_model"]["class"] == "RobertaForSequenceClassification"
    components = {d["component"] for d in config["tensors"].values()}
    assert components == {"factors", "norms", "head", "frozen_stored"}  # trained norms and head included
    tensors = load_file(tmp_path / WEIGHTS_NAME)
    assert set(tensors) == set(config["tensors"])
    report = tenpeft.parameter_report(model)
    assert sum(t.numel() for t in tensors.values()) == report.trainable + report.frozen_stored
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("method", ["lorta", "vera"])
def test_shared_and_frozen_factors(method, tmp_path):
    model, batch = trained("llama", method)
    tenpeft.save_adapter(model, tmp_path / "a")
    names = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())["tensors"]
    shared = [n for n in names if n.startswith("tenpeft_shared.")]
    assert shared and len(shared) == len(set(shared))  # stored once
    assert all(names[n]["component"] != "seed_regenerable" for n in names)
    tenpeft.save_adapter(model, tmp_path / "b", store_frozen_random=True)
    stored = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())["tensors"]
    regenerable = [n for n, d in stored.items() if d["component"] == "seed_regenerable"]
    assert bool(regenerable) == (method == "vera")
    fresh = tenpeft.from_pretrained(tiny_model("llama"), tmp_path / "b")
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-6


def _saved(tmp_path, family="bert", method="lorta"):
    model, _ = trained(family, method)
    tenpeft.save_adapter(model, tmp_path)
    return tmp_path


def _edit_config(directory, edit):
    path = directory / CONFIG_NAME
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
    "missing weights": (lambda d: os.remove(d / WEIGHTS_NAME), None, "adapter is incomplete"),
    "truncated weights": (lambda d: _truncate(d / WEIGHTS_NAME), None, "truncated or damaged"),
    "missing config": (lambda d: os.remove(d / CONFIG_NAME), None, "not a tenpeft adapter directory"),
    "damaged config": (lambda d: (d / CONFIG_NAME).write_text("{not json"), None, "not valid JSON"),
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
    tensors = load_file(directory / WEIGHTS_NAME)
    name = next(iter(tensors))
    tensors["renamed." + name] = tensors.pop(name)
    save_file(tensors, directory / WEIGHTS_NAME)
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


def _tensors_and_config(directory):
    config = json.loads((directory / CONFIG_NAME).read_text())
    return load_file(directory / WEIGHTS_NAME), config


def test_saving_while_merged_writes_the_unmerged_adapter(tmp_path):
    """A merged model's stored frozen tensors (the TT head's base weight) are saved without ΔW."""
    model, batch = trained("roberta", "lora", head="tt")
    tenpeft.save_adapter(model, tmp_path / "unmerged")
    tenpeft.merge(model)
    merged_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    tenpeft.save_adapter(model, tmp_path / "merged")
    assert all(torch.equal(p, merged_weights[n]) for n, p in model.named_parameters())  # the model is untouched
    assert all(w.merged for w in model.modules() if isinstance(w, ParallelUpdate))
    saved, config = _tensors_and_config(tmp_path / "merged")
    plain, plain_config = _tensors_and_config(tmp_path / "unmerged")
    stored = [n for n, d in config["tensors"].items() if d["component"] == "frozen_stored"]
    assert stored and config == plain_config and set(saved) == set(plain)
    assert max((merged_weights[n] - plain[n]).abs().max() for n in stored) > 1e-4  # the head's ΔW is not zero
    for name in saved:
        assert torch.allclose(saved[name], plain[name], atol=1e-6, rtol=0), name
    fresh = tenpeft.from_pretrained(tiny_model("roberta"), tmp_path / "merged")
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() <= 1e-5
    tenpeft.unmerge(model)  # saving while merged writes exactly what unmerge would leave
    tenpeft.save_adapter(model, tmp_path / "after")
    after, _ = _tensors_and_config(tmp_path / "after")
    assert all(torch.equal(saved[n], after[n]) for n in saved)


def test_saving_a_stale_merge_is_refused(tmp_path):
    model, _ = trained("roberta", "lora", head="tt")
    tenpeft.merge(model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if p.requires_grad and "classifier.dense" in n).add_(1.0)
    with pytest.raises(tenpeft.TenpeftError, match="changed while merged"):
        tenpeft.save_adapter(model, tmp_path)
    assert not os.path.exists(tmp_path / CONFIG_NAME)


def test_load_adapter_into_a_merged_model_is_refused(tmp_path):
    directory = _saved(tmp_path / "a")
    model, batch = trained("bert", "lorta")
    tenpeft.merge(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(tenpeft.TenpeftError, match=r"the model is merged; call tenpeft.unmerge\(model\) before "
                                                   r"load_adapter"):
        tenpeft.load_adapter(model, directory)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    logits(model, batch)  # not stale
    tenpeft.load_adapter(tenpeft.unmerge(model), directory)


# ---- a hand-edited or foreign tenpeft_config.json: one TenpeftError naming the field ------------------------

def _drop(*keys):
    def edit(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return edit


def _put(value, *keys):
    def edit(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def _first_tensor(edit):
    return lambda config: edit(config["tensors"][next(iter(config["tensors"]))])


REQUIRED = ("format_version", "tenpeft_version", "method", "hyperparameters", "targets", "base_model",
            "frozen_random_stored", "tensors")
MALFORMED = {
    **{f"missing {key}": (_drop(key), f"field '{key}' is missing") for key in REQUIRED},
    "format_version a string": (_put("1", "format_version"), "field 'format_version' must be an int, got string"),
    "tenpeft_version a number": (_put(1, "tenpeft_version"), "field 'tenpeft_version' must be a string, got int"),
    "method null": (_put(None, "method"), "field 'method' must be a string, got null"),
    "hyperparameters a list": (_put([], "hyperparameters"), "field 'hyperparameters' must be an object, got list"),
    "targets a string": (_put("x", "targets"), "field 'targets' must be a list, got string"),
    "a target a number": (_put([1], "targets"), r"field 'targets\[0\]' must be a string, got int"),
    "base_model a list": (_put([], "base_model"), "field 'base_model' must be an object, got list"),
    "base_model.class missing": (_drop("base_model", "class"), "field 'base_model.class' is missing"),
    "base_model.dims missing": (_drop("base_model", "dims"), "field 'base_model.dims' is missing"),
    "base_model.dims a list": (_put([48], "base_model", "dims"), "field 'base_model.dims' must be an object"),
    "a dim missing": (_drop("base_model", "dims", "hidden_size"), "field 'base_model.dims.hidden_size' is missing"),
    "a dim a string": (_put("48", "base_model", "dims", "hidden_size"),
                       "field 'base_model.dims.hidden_size' must be an int or null, got string"),
    "frozen_random_stored a string": (_put("no", "frozen_random_stored"),
                                      "field 'frozen_random_stored' must be a boolean, got string"),
    "tensors a list": (_put([], "tensors"), "field 'tensors' must be an object, got list"),
    "a tensor entry a list": (lambda c: c["tensors"].update(dict.fromkeys(c["tensors"], [])),
                              r"field 'tensors\[.*\]' must be an object, got list"),
    "a shape missing": (_first_tensor(lambda t: t.pop("shape")), r"field 'tensors\[.*\]\.shape' is missing"),
    "a shape a string": (_first_tensor(lambda t: t.update(shape="48")),
                         r"field 'tensors\[.*\]\.shape' must be a list, got string"),
    "a shape of floats": (_first_tensor(lambda t: t.update(shape=[1.5])),
                          r"field 'tensors\[.*\]\.shape\[0\]' must be an int, got number"),
    "a dtype missing": (_first_tensor(lambda t: t.pop("dtype")), r"field 'tensors\[.*\]\.dtype' is missing"),
    "a component a number": (_first_tensor(lambda t: t.update(component=1)),
                             r"field 'tensors\[.*\]\.component' must be a string, got int"),
    "plugins a string": (_put("my_pkg", "plugins"), "field 'plugins' must be a list, got string"),
}
NOT_AN_OBJECT = {"a list": [], "a string": "adapter", "null": None, "a number": 3}


@pytest.fixture(scope="module")
def saved_lora(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lora")
    tenpeft.save_adapter(tenpeft.inject(tiny_model("bert"), "lora"), directory)
    return directory


def _load_by(entry, directory, capsys):
    """Load ``directory`` through ``entry``; returns the error message and asserts the model is untouched."""
    if entry == "inspect":
        from tenpeft import cli
        assert cli.main(["inspect", str(directory)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tenpeft: error: ") and len(err.strip().splitlines()) == 1
        return err
    model = tiny_model("bert") if entry == "from_pretrained" else tenpeft.inject(tiny_model("bert"), "lora")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError) as info:
        getattr(tenpeft, entry)(model, directory)
    if entry == "from_pretrained":
        assert_untouched(model, before)
    else:
        after = fingerprint(model)
        assert after[0] == before[0] and after[2] == before[2]
        assert all(torch.equal(v, before[1][n][0]) for n, (v, _) in after[1].items())
    return str(info.value)


ENTRIES = ("from_pretrained", "load_adapter", "inspect")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_config_names_the_field(case, entry, saved_lora, tmp_path, capsys):
    edit, message = MALFORMED[case]
    directory = tmp_path / "adapter"
    shutil.copytree(saved_lora, directory)
    _edit_config(directory, edit)
    err = _load_by(entry, directory, capsys)
    assert re.search(message, err), err
    assert CONFIG_NAME in err and "tenpeft.save_adapter" in err


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", sorted(NOT_AN_OBJECT))
def test_config_that_is_not_an_object(case, entry, saved_lora, tmp_path, capsys):
    directory = tmp_path / "adapter"
    shutil.copytree(saved_lora, directory)
    (directory / CONFIG_NAME).write_text(json.dumps(NOT_AN_OBJECT[case]))
    err = _load_by(entry, directory, capsys)
    kind = {"a list": "list", "a string": "string", "null": "null", "a number": "int"}[case]
    assert f"must be a JSON object, got {kind}" in err and CONFIG_NAME in err


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_peft_config_points_to_peft(entry, saved_lora, tmp_path, capsys):
    directory = tmp_path / "adapter"
    shutil.copytree(saved_lora, directory)
    (directory / CONFIG_NAME).write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "bert-base-uncased", "r": 8, "target_modules": ["query"]}))
    assert "peft.PeftModel.from_pretrained" in _load_by(entry, directory, capsys)


def test_adapter_files_are_readable_by_others(tmp_path):
    import stat

    model = tenpeft.inject(tiny_model("bert"), "lora")
    tenpeft.save_adapter(model, str(tmp_path / "a"))
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "a").iterdir()}
    assert modes == {CONFIG_NAME: 0o666 & ~mask, WEIGHTS_NAME: 0o666 & ~mask}
