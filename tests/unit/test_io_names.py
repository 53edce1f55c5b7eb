"""A tenpeft adapter folder cannot be taken for a PEFT adapter or a transformers model, and back: each
library given the other's folder fails saying so (issue 14, item 2). Folders saved under PEFT's names by
tenpeft 0.1.0 still load."""
import os
import shutil

import pytest
import torch

import tenpeft
from helpers import assert_untouched, fingerprint, logits, perturbed
from models import tiny_batch, tiny_model
from tenpeft.state import CONFIG_NAME, LEGACY_NAMES, WEIGHTS_NAME

ENTRIES = ("from_pretrained", "load_adapter", "inspect")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved, non-trivial LoRA adapter on tiny BERT and the logits it gives."""
    torch.manual_seed(0)
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lora"))
    directory = tmp_path_factory.mktemp("tenpeft")
    tenpeft.save_adapter(model, directory)
    return directory, logits(model, tiny_batch(model))


def _error(entry, directory, capsys) -> str:
    """The one-line error of loading ``directory`` through ``entry``; the model is left as it was."""
    if entry == "inspect":
        from tenpeft import cli
        assert cli.main(["inspect", str(directory)]) == 2
        return capsys.readouterr().err
    model = tiny_model("bert")
    if entry == "load_adapter":
        tenpeft.inject(model, "lora")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError) as info:
        getattr(tenpeft, entry)(model, str(directory))
    if entry == "from_pretrained":
        assert_untouched(model, before)
    return str(info.value)


def test_saved_files_are_not_peft_names(saved):
    directory, _ = saved
    assert sorted(os.listdir(directory)) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    assert not set(LEGACY_NAMES) & set(os.listdir(directory))


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_peft_folder_given_to_tenpeft_names_peft(entry, tmp_path, capsys):
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lora"))
    tenpeft.to_lora(model, rank=4, directory=str(tmp_path / "peft"))
    assert os.path.isfile(tmp_path / "peft" / "adapter_config.json")  # to_lora stays a genuine PEFT folder
    err = _error(entry, tmp_path / "peft", capsys)
    assert "holds a PEFT adapter (peft_type 'LORA')" in err and "peft.PeftModel.from_pretrained" in err, err


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_transformers_folder_given_to_tenpeft_names_transformers(entry, tmp_path, capsys):
    tiny_model("bert").save_pretrained(tmp_path / "model")
    err = _error(entry, tmp_path / "model", capsys)
    assert "a transformers model (config.json)" in err and CONFIG_NAME in err, err


def test_a_tenpeft_folder_given_to_peft_fails_in_peft_not_deep_inside(saved):
    """PEFT looks for its own config file and does not find one (before the rename it parsed tenpeft's
    config and failed with KeyError: 'base_model_name_or_path')."""
    from peft import PeftModel

    directory, _ = saved
    with pytest.raises(ValueError, match="adapter_config.json"):
        PeftModel.from_pretrained(tiny_model("bert"), str(directory))


def test_a_tenpeft_folder_given_to_transformers_fails_naming_config_json(saved):
    from transformers import AutoModel

    directory, _ = saved
    with pytest.raises((OSError, ValueError), match="config.json"):  # not KeyError: 'base_model_name_or_path'
        AutoModel.from_pretrained(str(directory))


def test_a_folder_saved_under_the_legacy_names_still_loads(saved, tmp_path):
    directory, expected = saved
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for new, old in zip((CONFIG_NAME, WEIGHTS_NAME), LEGACY_NAMES):
        shutil.copy(directory / new, legacy / old)
    model = tenpeft.from_pretrained(tiny_model("bert"), str(legacy))
    assert torch.equal(logits(model, tiny_batch(model)), expected)
    from tenpeft import cli
    assert cli.summarize_adapter(str(legacy))["file"] == LEGACY_NAMES[1]
