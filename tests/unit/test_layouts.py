"""Layouts: the shared tensor is never built in forward, GQA head mapping, frozen sharing,
mixed precision, hand-named targets."""
import math

import pytest
import torch
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig

import tenpeft
from helpers import logits, train_steps
from models import tiny_batch, tiny_model
from tenpeft.placements import ParallelUpdate

SHARED = ("lorta", "lorta_tucker", "lorta_tt")


class LargestTensor(TorchDispatchMode):
    """While active, the largest tensor any op makes (views of its inputs, e.g. a weight's ``.t()``, are not
    made): its numel and the op."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if (isinstance(t, torch.Tensor) and t.numel() > self.numel
                    and t.untyped_storage().data_ptr() not in inputs):
                self.numel, self.op = t.numel(), str(func)
        return out


@pytest.mark.parametrize("method", SHARED)
def test_shared_tensor_never_materialized_in_forward(method):
    """Two training steps make no tensor as large as the smallest ``ΔW`` (a GQA K: 24 x 48), let alone the
    shared tensor: rank 1 and one short sequence keep every legitimate tensor below that (checked by
    watching a ``delta_weight`` call trip the same watch)."""
    model = tenpeft.inject(tiny_model("llama"), method, rank=1)
    batch = tiny_batch(model, batch=1, length=5)
    updates = [u for m in model.modules() if isinstance(m, ParallelUpdate) for u in m.updates]
    smallest = min(u.in_features * u.out_features for u in updates)
    assert smallest < math.prod(model.tenpeft_shared["attention"].shape)
    with LargestTensor() as watch:
        grads = train_steps(model, batch, steps=2)
    assert grads[0] | grads[1] == {n for n, p in model.named_parameters() if p.requires_grad}  # it trained
    assert watch.numel < smallest, (watch.op, watch.numel, smallest)
    with LargestTensor() as alive, torch.no_grad():
        updates[0].delta_weight()
    assert alive.numel >= smallest


@pytest.mark.parametrize("method", SHARED)
def test_contraction_path_at_llama_7b_dims_has_no_d_by_d_intermediate(method):
    from transformers import AutoModelForCausalLM

    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32,
                         intermediate_size=11008, vocab_size=32000)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tenpeft.inject(model, method)
    shared, attn, tokens = model.tenpeft_shared["attention"], model.model.layers[5].self_attn, 8 * 128
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
        update = proj.updates[0]
        if update.role == "o":
            info = shared.contraction_info((tokens, 32, 128), (2, 1), (0,), update._fixed())
        else:
            info = shared.contraction_info((tokens, 4096), (0,), (2, 1), update._fixed())
        assert info.largest_intermediate <= tokens * 4096 < 4096 * 4096


def test_gqa_head_mapping():
    model = tenpeft.inject(tiny_model("llama"), "lorta", alpha=None)  # scale 1; 4 query heads, 2 KV heads, head dim 12
    shared = model.tenpeft_shared["attention"]
    with torch.no_grad():
        for p in shared.parameters():
            p.normal_()
        full = shared.reconstruct()  # (d, d_H, H, L, M)
    attn = model.model.layers[1].self_attn
    q, k, o = attn.q_proj.updates[0], attn.k_proj.updates[0], attn.o_proj.updates[0]
    with torch.no_grad():
        assert torch.allclose(q.delta_weight(), full[:, :, :, 1, 0].permute(2, 1, 0).reshape(48, 48), atol=1e-5)
        # KV head g uses the head-mode slice of query head g * H / H_kv = 0, 2
        assert torch.allclose(k.delta_weight(), full[:, :, [0, 2], 1, 1].permute(2, 1, 0).reshape(24, 48),
                              atol=1e-5)
        assert torch.allclose(o.delta_weight(), full[:, :, :, 1, 3].permute(0, 2, 1).reshape(48, 48), atol=1e-5)


def test_lorta_matrix_types_follow_roles():
    model = tenpeft.inject(tiny_model("bert"), "lorta", roles=("q", "v"), rank=3)
    assert model.tenpeft_shared["attention"].shape == (48, 12, 4, 2, 2)
    assert tenpeft.parameter_report(model).components["shared_factors"] == 3 * (48 + 12 + 4 + 2 + 2)


def test_vera_frozen_factors_shared_across_layers_and_regenerated():
    a = tenpeft.inject(tiny_model("bert"), "vera", seed=3)
    b = tenpeft.inject(tiny_model("bert", seed=5), "vera", seed=3)
    layers = a.bert.encoder.layer
    assert layers[0].attention.self.query.updates[0].shared is layers[1].attention.self.query.updates[0].shared
    assert set(a.tenpeft_shared) == {"vera_q", "vera_v"}
    for key in ("vera_q", "vera_v"):
        assert torch.equal(a.tenpeft_shared[key].factor_0, b.tenpeft_shared[key].factor_0)
    assert not torch.equal(a.tenpeft_shared["vera_q"].factor_0, a.tenpeft_shared["vera_v"].factor_0)
    assert a.tenpeft_state.config.seed == 3


@pytest.mark.parametrize("method", ["lora", "loretta_rep", "lorta", "vera", "nola", "loretta_adp"])
def test_bf16_base_with_fp32_factors(method):
    model = tiny_model("llama").to(torch.bfloat16)
    batch = tiny_batch(model)
    base = logits(model, batch)
    tenpeft.inject(model, method)
    base_trained = model.tenpeft_state.components  # trained norms stay in the base dtype
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and n not in base_trained]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    out = logits(model, batch)
    assert out.dtype == torch.bfloat16 and torch.equal(out, base)
    train_steps(model, batch, steps=1)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)


def test_adapter_dtype_auto_follows_base():
    model = tenpeft.inject(tiny_model("llama").to(torch.bfloat16), "lora", adapter_dtype="auto")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("spec,exclude,expected", [
    (["query"], None, ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]),
    (r".*layer\.0\..*(query|value)", None,
     ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value"]),
    (["query", "value"], ["layer.1.attention.self.value", "layer.0.attention.self.query"],
     ["bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.1.attention.self.query"]),
    (["dense"], r".*(pooler|intermediate|output).*", []),
])
def test_hand_named_targets(spec, exclude, expected):
    model = tiny_model("bert")
    if not expected:
        with pytest.raises(tenpeft.TenpeftError, match="matched no linear layer"):
            tenpeft.inject(model, "lora", target_modules=spec, exclude_modules=exclude)
        return
    tenpeft.inject(model, "lora", target_modules=spec, exclude_modules=exclude)
    assert sorted(t.name for t in model.tenpeft_state.targets) == expected
    assert model.tenpeft_state.targets[0].role in ("q", "v")  # known roles are recognised by name


def test_head_is_never_a_target():
    model = tenpeft.inject(tiny_model("roberta"), "lora", target_modules=["dense"])
    assert all(not t.name.startswith("classifier") for t in model.tenpeft_state.targets)


def test_vera_frozen_bases_are_kaiming_uniform_as_in_peft():
    """A (r x in) ~ U(±sqrt(6/in)), B (out x r) ~ U(±sqrt(6/r)): PEFT's and the VeRA paper's init."""
    model = tenpeft.inject(tiny_model("bert"), "vera", rank=256)
    shared = next(iter(model.tenpeft_shared.values()))
    b, a_t = shared.factor_0, shared.factor_1  # (out x r), (in x r)
    for factor, fan_in in ((b, 256), (a_t, a_t.shape[0])):
        bound = math.sqrt(6 / fan_in)
        assert factor.abs().max() <= bound and factor.abs().max() > 0.95 * bound
        assert abs(factor.std().item() / math.sqrt(2 / fan_in) - 1) < 0.05  # uniform(±b) has std b/sqrt(3)


def test_lorta_default_is_the_official_init_and_scale():
    """ihounie/lorta: A ~ U(±1/sqrt(r)), C_H, C_L, C_M ~ U(±sqrt(6/r)), B = 0, scale lora_alpha / r (alpha 8)."""
    torch.manual_seed(0)
    model = tenpeft.inject(tiny_model("llama"), "lorta", rank=4)
    shared = model.tenpeft_shared["attention"]
    assert torch.count_nonzero(shared.factor_1) == 0
    for name, bound in (("factor_0", 0.5), ("factor_2", math.sqrt(1.5)), ("factor_3", math.sqrt(1.5)),
                        ("factor_4", math.sqrt(1.5))):
        factor = getattr(shared, name)
        assert factor.abs().max() <= bound and factor.abs().max() > 0.5 * bound, name
    assert model.model.layers[0].self_attn.q_proj.updates[0].scale == 8 / 4
    std = tenpeft.inject(tiny_model("llama"), "lorta", rank=4, init="std", alpha=None)
    assert std.model.layers[0].self_attn.q_proj.updates[0].scale == 1.0
