"""Named adapters (issue 14, item 4): several adapters (same or different methods) on one base, one active;
each computes, trains, saves, loads, merges as if it were alone; switching gives each its own head and
norms back; bad input leaves the model as it was."""
import pytest
import torch

import tenpeft
from helpers import fingerprint, logits, perturbed
from models import tiny_batch, tiny_model

PAIRS = [("lora", "lorta"), ("loretta_rep", "lora"), ("lora", "loretta_adp")]


def _two(family: str, first: str, second: str):
    """A model with adapter 'default' (``first``, trained) and 'b' (``second``, trained) and their logits."""
    torch.manual_seed(0)
    model = perturbed(tenpeft.inject(tiny_model(family), first))
    batch = tiny_batch(model)
    out_a = logits(model, batch)
    tenpeft.add_adapter(model, "b", second)
    assert tenpeft.adapter_names(model) == ["default", "b"] and tenpeft.active_adapter(model) == "default"
    assert torch.equal(logits(model, batch), out_a)  # adding one does not change the active one
    tenpeft.set_adapter(model, "b")
    assert torch.equal(logits(model, batch), logits(tiny_model(family), batch))  # b is new: the base's outputs
    perturbed(model)
    return model, batch, out_a, logits(model, batch)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("first, second", PAIRS)
def test_switching_gives_each_adapter_its_own_outputs(family, first, second):
    model, batch, out_a, out_b = _two(family, first, second)
    assert not torch.equal(out_a, out_b)
    for name, expected in [("default", out_a), ("b", out_b), ("default", out_a)]:
        tenpeft.set_adapter(model, name)
        assert torch.equal(logits(model, batch), expected), name
    assert tenpeft.parameter_report(model).matches_formula


def test_only_the_active_adapter_trains():
    model, batch, out_a, _ = _two("bert", "lora", "lorta")
    trainable = [p for p in model.parameters() if p.requires_grad]
    alone = tenpeft.inject(tiny_model("bert"), "lorta")  # what 'b' trains when it is the only adapter
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in alone.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    model(**batch).loss.backward()
    optimizer.step()
    trained_b = logits(model, batch)
    tenpeft.set_adapter(model, "default")
    assert torch.equal(logits(model, batch), out_a)  # 'default' (head included) did not move
    tenpeft.set_adapter(model, "b")
    assert torch.equal(logits(model, batch), trained_b)


def test_each_adapter_saves_and_loads_by_name(tmp_path):
    model, batch, out_a, out_b = _two("bert", "lora", "lorta")  # 'b' is active
    tenpeft.save_adapter(model, tmp_path / "a", adapter_name="default")
    tenpeft.save_adapter(model, tmp_path / "b")  # the active one
    assert tenpeft.active_adapter(model) == "b" and torch.equal(logits(model, batch), out_b)
    fresh = tenpeft.from_pretrained(tiny_model("bert"), str(tmp_path / "a"))
    tenpeft.from_pretrained(fresh, str(tmp_path / "b"), adapter_name="b")
    assert tenpeft.adapter_names(fresh) == ["default", "b"]
    assert torch.equal(logits(fresh, batch), out_a)
    tenpeft.set_adapter(fresh, "b")
    assert torch.equal(logits(fresh, batch), out_b)
    tenpeft.load_adapter(fresh, str(tmp_path / "b"), adapter_name="b")  # into a named one, no switch
    assert tenpeft.active_adapter(fresh) == "b"


def test_merge_acts_on_the_active_adapter_and_switching_waits_for_unmerge():
    model, batch, out_a, out_b = _two("llama", "lora", "lorta")
    tenpeft.merge(model)
    assert torch.allclose(logits(model, batch), out_b, atol=1e-5)
    with pytest.raises(tenpeft.TenpeftError, match="merged.*unmerge\\(model\\) before set_adapter"):
        tenpeft.set_adapter(model, "default")
    tenpeft.unmerge(model)
    tenpeft.set_adapter(model, "default")
    assert torch.allclose(logits(model, batch), out_a, atol=1e-6)


def test_delete_and_unload():
    model, batch, out_a, _ = _two("bert", "lora", "lora")  # the same method twice
    base = fingerprint(tiny_model("bert"))
    with pytest.raises(tenpeft.TenpeftError, match="'b' is the active one; set_adapter one of \\['default'\\]"):
        tenpeft.delete_adapter(model, "b")
    tenpeft.set_adapter(model, "default")
    tenpeft.delete_adapter(model, "b")
    assert tenpeft.adapter_names(model) == ["default"] and torch.equal(logits(model, batch), out_a)
    tenpeft.unload(model)
    assert fingerprint(model)[0] == base[0] and sorted(vars(model)) == base[2]


def _unchanged(model, before) -> None:
    after = fingerprint(model)
    assert after[0] == before[0] and after[2] == before[2] and after[1].keys() == before[1].keys()
    assert all(torch.equal(after[1][n][0], v) and after[1][n][1] == f for n, (v, f) in before[1].items()), "values"


BAD = {
    "unknown name": (lambda m: tenpeft.set_adapter(m, "c"), "no adapter named 'c'; it has \\['b', 'default'\\]"),
    "name taken": (lambda m: tenpeft.add_adapter(m, "default", "lora"), "already has an adapter named 'default'"),
    "bad name": (lambda m: tenpeft.add_adapter(m, "a/b", "lora"), "must be a non-empty string without '/'"),
    "bad method": (lambda m: tenpeft.add_adapter(m, "c", "lora", rank=0), "rank"),
    "full beside others": (lambda m: tenpeft.add_adapter(m, "c", "full"), "cannot share the model"),
    "delete unknown": (lambda m: tenpeft.delete_adapter(m, "c"), "no adapter named 'c'"),
    "inject again": (lambda m: tenpeft.inject(m, "lora"), "tenpeft.add_adapter\\(model, name, method\\)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_and_the_model_unchanged(case):
    model, batch, _, out_b = _two("bert", "lora", "lorta")
    call, message = BAD[case]
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match=message):
        call(model)
    _unchanged(model, before)
    assert tenpeft.adapter_names(model) == ["b", "default"] and torch.equal(logits(model, batch), out_b)


def test_switching_inside_disable_adapter_is_refused():
    model, batch, _, out_b = _two("bert", "lora", "lorta")
    with tenpeft.disable_adapter(model):
        with pytest.raises(tenpeft.TenpeftError, match="disabled .* set_adapter after the with-block"):
            tenpeft.set_adapter(model, "default")
    assert torch.equal(logits(model, batch), out_b)


def test_a_named_load_for_another_base_leaves_the_model_as_it_was(tmp_path):
    other = tenpeft.inject(tiny_model("llama"), "lora")
    tenpeft.save_adapter(other, tmp_path / "llama")
    model, batch, _, out_b = _two("bert", "lora", "lorta")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match="saved for another base model"):
        tenpeft.from_pretrained(model, str(tmp_path / "llama"), adapter_name="c")
    _unchanged(model, before)
    assert tenpeft.adapter_names(model) == ["b", "default"] and torch.equal(logits(model, batch), out_b)


def test_from_pretrained_names_the_first_adapter_and_refuses_a_bad_name_before_loading(tmp_path):
    tenpeft.save_adapter(perturbed(tenpeft.inject(tiny_model("bert"), "lora")), tmp_path / "a")
    model = tenpeft.from_pretrained(tiny_model("bert"), str(tmp_path / "a"), adapter_name="sst2")
    assert tenpeft.adapter_names(model) == ["sst2"]
    bare = tiny_model("bert")
    before = fingerprint(bare)
    with pytest.raises(tenpeft.TenpeftError, match="must be a non-empty string without '/'"):
        tenpeft.from_pretrained(bare, str(tmp_path / "a"), adapter_name="a/b")
    _unchanged(bare, before)
