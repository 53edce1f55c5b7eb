"""Export to a PEFT LoRA adapter: PEFT reloads it and matches within the reported error."""
import warnings

import pytest
import torch

import tenpeft
from helpers import logits, methods_placed, perturbed, trained
from models import FAMILIES, tiny_model

peft = pytest.importorskip("peft")
PARALLEL = methods_placed("parallel")


def _trained(family, method):
    model, batch = trained(family, method)
    return perturbed(model, 0.05), batch  # a sizeable update, so truncation errors are visible


def _peft_model(family, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(tiny_model(family), directory).eval()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PARALLEL)
def test_full_rank_export_is_exact(family, method, tmp_path):
    model, batch = _trained(family, method)
    export = tenpeft.to_lora(model, 48, tmp_path)  # 48 >= min(out, in) of every target here
    assert export.max_error <= 1e-6
    assert (logits(_peft_model(family, tmp_path), batch) - logits(model, batch)).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["roberta", "llama", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "loretta_rep", "vera", "lorta"])
def test_truncated_export_matches_its_reported_error(family, method, tmp_path):
    model, _ = _trained(family, method)
    export = tenpeft.to_lora(model, 2, tmp_path)
    loaded = dict(_peft_model(family, tmp_path).base_model.model.named_modules())
    ours = dict(model.named_modules())
    assert set(export.errors) == {t.name for t in model.tenpeft_state.targets}
    for name, error in export.errors.items():
        lora = loaded[name]
        with torch.no_grad():
            delta = lora.lora_B["default"].weight @ lora.lora_A["default"].weight * lora.scaling["default"]
            reference = ours[name].delta_weight()
            measured = float(torch.linalg.norm(delta - reference) / torch.linalg.norm(reference))
        assert abs(measured - error) <= 1e-4, name
    assert export.max_error > 1e-3  # rank 2 really truncates every one of these (lorta has rank 4)


@pytest.mark.parametrize("method,message", [("loretta_adp", "serial adapters"), ("adapter", "serial adapters"),
                                            ("bitfit", "no low-rank update")])
def test_methods_without_a_lora_form_refuse(method, message, tmp_path):
    model = tenpeft.inject(tiny_model("bert"), method)
    with pytest.raises(tenpeft.TenpeftError, match=message):
        tenpeft.to_lora(model, 4, tmp_path)


def test_bad_rank(tmp_path):
    with pytest.raises(tenpeft.TenpeftError, match="rank must be an int >= 1"):
        tenpeft.to_lora(tenpeft.inject(tiny_model("bert"), "lora"), 0, tmp_path)
