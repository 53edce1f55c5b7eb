"""The field's other tensor methods (LoTR, FacT-TT/TK, MetaTT, TensLoRA, KronA/LoKr): counts at the
dimensions their papers and official codes report, the layouts that coincide (stated in
docs/methods.md) checked by mapping one method's factors onto the other's, the official inits, PEFT
LoKr's logits, and the bad input of the new options. The invariant matrix covers them by name."""
from __future__ import annotations

import pytest
import torch
import transformers

import tenpeft
from helpers import logits
from models import tiny_batch, tiny_model
from tenpeft.placements import ParallelUpdate
from tenpeft.presets import build_model

ROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def _meta_count(method: str, **kwargs) -> int:
    """Adapter parameters (factors + shared factors) of ``method`` on RoBERTa-base dims (ViT-B's too:
    d 768, 12 layers, 12 heads, FFN 3072), built on the meta device."""
    model = build_model(transformers.RobertaConfig(**ROBERTA_BASE), "base", device="meta")
    return tenpeft.parameter_report(tenpeft.inject(model, method, **kwargs)).adapter


# (method, kwargs, count, source). LoTR: the docstring of daskol/lotr lotr/lotr.py (RoBERTa-base, Q and V,
# r=2: 592,130 -> 595,298 trainable) and its data/table/roberta/glue/lotr.csv (params minus the 1,536 it
# adds at every rank). FacT: PETL-ViT FacT/fact_tt.py, fact_tk.py on ViT-B (2dr + 144 r^2, 2dr + r^3 + 144 r);
# the paper's 0.040M / 0.069M are averages over the per-dataset ranks of its yaml files (docs/methods.md).
# TensLoRA: utils/parameter_count.py of ax-le/TensLoRA at ViT-base dims, r=4 (uncapped ranks given as tuples).
# KronA: PEFT LoKr's count on a 768 x 768 layer (r=8: w1 24x24 + w2 low-rank 8 (32 + 32) = 1,088) x 24.
PAPER_COUNTS = [
    ("lotr", dict(rank=2), 3168, "lotr.py docstring"),
    *[("lotr", dict(rank=r), n - 1536, "lotr.csv") for r, n in
      [(1, 3096), (2, 4704), (4, 8064), (8, 15360), (16, 32256), (32, 75264)]],
    *[("fact_tt", dict(rank=r), 2 * 768 * r + 144 * r * r, "fact_tt.py") for r in (4, 8, 16)],
    *[("fact_tk", dict(rank=r), 2 * 768 * r + r ** 3 + 144 * r, "fact_tk.py") for r in (16, 32)],
    ("tenslora", dict(layout="att", rank=4), 123_840, "parameter_count.py"),
    ("tenslora", dict(layout="qkv", rank=(4, 4, 4)), 74_640, "parameter_count.py"),
    ("tenslora", dict(layout="depth", rank=4), 18_768, "parameter_count.py"),
    ("tenslora", dict(layout="att_qkv", rank=(4, 4, 4, 4)), 43_728, "parameter_count.py"),
    ("tenslora", dict(layout="att_depth", rank=4), 11_040, "parameter_count.py"),
    ("tenslora", dict(layout="qkv_depth", rank=(4, 4, 4, 4)), 6_460, "parameter_count.py"),
    ("tenslora", dict(layout="att_qkv_depth", rank=(4, 4, 4, 4, 4)), 4_460, "parameter_count.py"),
    ("krona", dict(), 24 * 1088, "PEFT LoKr"),
]


@pytest.mark.parametrize("method, kwargs, count, source", PAPER_COUNTS,
                         ids=[f"{m}-{'-'.join(f'{k}{v}' for k, v in a.items())}" for m, a, _, _ in PAPER_COUNTS])
def test_count_at_the_papers_dimensions(method, kwargs, count, source):
    assert _meta_count(method, **kwargs) == count, source


def test_tenslora_caps_an_int_rank_at_each_mode():
    """rank=4 on (768, 768, 3, 12): the matrix-type mode (3) keeps rank 3: 4*4*3*4 + 4*768*2 + 3*3 + 4*12."""
    assert _meta_count("tenslora", layout="qkv_depth", rank=4) == 192 + 6144 + 9 + 48


def test_metatt_count_is_the_sum_of_its_cores():
    """No paper count was found (docs/methods.md): ``r (d_in + d_out) + r^2 (L + M)``, M = 12 blocks."""
    assert _meta_count("metatt", rank=8) == 8 * (768 + 768) + 64 * (12 + 12)


def test_krona_count_equals_peft_lokr():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_model("bert"), peft.LoKrConfig(r=2, alpha=2, target_modules=["query", "value"]))
    theirs = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lokr" in n)
    assert tenpeft.parameter_report(tenpeft.inject(tiny_model("bert"), "krona", rank=2)).adapter == theirs


@pytest.mark.parametrize("rank", [2, 8])  # low-rank B (2 < 8/2) and full B on the 48 = 6 x 8 matrices
def test_krona_equals_peft_lokr(rank):
    """PEFT ``LoKrConfig(r, alpha=2r)`` (scaling 2) on q, v; tenpeft ``krona`` with the same factors
    (``a = lokr_w1``, ``b = lokr_w2`` or ``b_a, b_b = lokr_w2_a, lokr_w2_b``): identical logits."""
    peft = pytest.importorskip("peft")
    theirs = peft.get_peft_model(tiny_model("bert").double(), peft.LoKrConfig(
        r=rank, alpha=2 * rank, target_modules=["query", "value"])).double()
    ours = tenpeft.inject(tiny_model("bert").double(), "krona", rank=rank, alpha=2.0 * rank, adapter_dtype="float64")
    gen = torch.Generator().manual_seed(0)
    wrappers = {n: m for n, m in ours.named_modules() if isinstance(m, ParallelUpdate)}
    assert len(wrappers) == 4
    with torch.no_grad():
        for name, wrapper in wrappers.items():
            layer = theirs.base_model.model.get_submodule(name)
            tensor = wrapper.updates[0].factorization
            for ours_name, peft_name in (("a", "lokr_w1"), ("b", "lokr_w2"), ("b_a", "lokr_w2_a"), ("b_b", "lokr_w2_b")):
                if ours_name in tensor.factor_names:
                    theirs_factor = getattr(layer, peft_name)["default"]
                    theirs_factor.copy_(torch.randn(theirs_factor.shape, generator=gen, dtype=torch.float64))
                    getattr(tensor, ours_name).copy_(theirs_factor)
    batch = tiny_batch(ours)
    assert (logits(theirs, batch) - logits(tiny_model("bert").double(), batch)).abs().max() > 1e-3
    torch.testing.assert_close(logits(ours, batch), logits(theirs, batch), rtol=0.0, atol=1e-10)


def _deltas(model) -> dict[str, torch.Tensor]:
    return {n: m.delta_weight().detach() for n, m in model.named_modules() if isinstance(m, ParallelUpdate)}


def _shared(model, key: str):
    return model.tenpeft_shared[key]


def _random(tensor, gen) -> None:
    with torch.no_grad():
        for name in tensor.factor_names:
            factor = getattr(tensor, name)
            factor.copy_(torch.randn(factor.shape, generator=gen))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fact_tt_on_q_v_is_lotr(family):
    """LoTR and FacT-TT are one layout, TT over (in, layer x type, out); they differ in init and scale."""
    rank, gen = 3, torch.Generator().manual_seed(0)
    lotr = tenpeft.inject(tiny_model(family), "lotr", rank=rank)
    fact = tenpeft.inject(tiny_model(family), "fact_tt", rank=rank, roles=("q", "v"), scale=1 / rank)
    _random(_shared(lotr, "lotr_all"), gen)
    _shared(fact, "fact_all").load_state_dict(_shared(lotr, "lotr_all").state_dict())
    mine, theirs = _deltas(lotr), _deltas(fact)
    assert mine.keys() == theirs.keys() and len(mine) == 4
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_tenslora_qkv_depth_with_identity_index_factors_is_lotr(family):
    """TensLoRA ``qkv_depth`` Tucker (in, out, M, L) at ranks (r, r, M, L) with identity type and layer
    factors is LoTR on the same matrices: ``U_in = B``, ``U_out = A``, ``core[a, b, m, l] = G[a, l M + m, b]``."""
    rank, gen = 3, torch.Generator().manual_seed(1)
    lotr = tenpeft.inject(tiny_model(family), "lotr", rank=rank, roles=("q", "k", "v"), alpha=None)
    layers = lotr.config.num_hidden_layers
    tens = tenpeft.inject(tiny_model(family), "tenslora", rank=(rank, rank, 3, layers))
    t, k = _shared(lotr, "lotr_all"), _shared(tens, "tenslora_all")
    _random(t, gen)
    with torch.no_grad():
        k.factor_0.copy_(t.core_0[0])
        k.factor_1.copy_(t.core_2[:, :, 0].T)
        k.factor_2.copy_(torch.eye(3))
        k.factor_3.copy_(torch.eye(layers))
        k.core.copy_(t.core_1.unflatten(1, (layers, 3)).permute(0, 3, 2, 1))
    mine, theirs = _deltas(lotr), _deltas(tens)
    assert mine.keys() == theirs.keys() and len(mine) == 3 * layers
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=1e-5)


def _grads(tensor) -> dict[str, torch.Tensor]:
    return {name: getattr(tensor, name).grad.clone() for name in tensor.factor_names}


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("rank", [2, 4])
def test_tenslora_att_qkv_depth_in_cp_equals_lorta(family, rank):
    """TensLoRA ``att_qkv_depth`` held in CP over (in, d_H, H, M, L) is LoRTA's (d, d_H, H, L, M) on Q, K,
    V (GQA head sharing included) with the last two factors swapped: one count, both the base model at
    init, and for the same factor values the same ``ΔW``, logits and factor gradients (float64: the two
    contract in different orders, which float32 rounding would blur)."""
    roles, mapping = ("q", "k", "v"), ((0, 0), (1, 1), (2, 2), (3, 4), (4, 3))  # tenslora factor <- lorta factor
    exact, f64 = dict(rtol=0, atol=1e-10), dict(adapter_dtype="float64", alpha=8.0, rank=rank)
    base = tiny_model(family).double()
    batch = tiny_batch(base)
    lorta = tenpeft.inject(tiny_model(family).double(), "lorta", roles=roles, **f64)
    tens = tenpeft.inject(tiny_model(family).double(), "tenslora", layout="att_qkv_depth", format="cp", **f64)
    reports = [tenpeft.parameter_report(m) for m in (lorta, tens)]
    s = tenpeft.discover(base)
    assert reports[0].components == reports[1].components and all(r.matches_formula for r in reports)
    assert reports[0].components["shared_factors"] == rank * (s.hidden_size + s.head_dim + s.num_heads + s.num_layers + 3)
    assert torch.equal(logits(lorta, batch), logits(base, batch)) and torch.equal(logits(tens, batch), logits(base, batch))

    t, k = _shared(lorta, "attention"), _shared(tens, "tenslora_all")
    _random(t, torch.Generator().manual_seed(rank))
    with torch.no_grad():
        for mine, theirs in mapping:
            getattr(k, f"factor_{mine}").copy_(getattr(t, f"factor_{theirs}"))
    mine, theirs = _deltas(tens), _deltas(lorta)
    assert mine.keys() == theirs.keys() and len(mine) == 3 * s.num_layers
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], **exact)
    torch.testing.assert_close(logits(tens, batch), logits(lorta, batch), **exact)
    assert (logits(lorta, batch) - logits(base, batch)).abs().max() > 1e-3  # the update is not negligible
    for model in (lorta, tens):
        model(**batch).loss.backward()
    grads_t, grads_k = _grads(t), _grads(k)
    for mine_i, theirs_i in mapping:
        torch.testing.assert_close(grads_k[f"factor_{mine_i}"], grads_t[f"factor_{theirs_i}"], **exact)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fact_tk_is_tenslora_with_the_stack_core_unfolded(family):
    """FacT-TK Tucker (in, out, N) on Q, K, V is TensLoRA ``qkv_depth`` at ranks (r, r, M, L) with
    identity index factors and ``core[a, b, m, l] = (C x_3 P)[a, b, l M + m]`` (TensLoRA holds more)."""
    rank, gen = 3, torch.Generator().manual_seed(3)
    fact = tenpeft.inject(tiny_model(family), "fact_tk", rank=rank, roles=("q", "k", "v"))
    layers = fact.config.num_hidden_layers
    tens = tenpeft.inject(tiny_model(family), "tenslora", rank=(rank, rank, 3, layers))
    f, k = _shared(fact, "fact_all"), _shared(tens, "tenslora_all")
    _random(f, gen)
    with torch.no_grad():
        k.factor_0.copy_(f.factor_0)
        k.factor_1.copy_(f.factor_1)
        k.factor_2.copy_(torch.eye(3))
        k.factor_3.copy_(torch.eye(layers))
        stack = torch.einsum("abc,nc->abn", f.core, f.factor_2)
        k.core.copy_(stack.unflatten(2, (layers, 3)).permute(0, 1, 3, 2))
    mine, theirs = _deltas(fact), _deltas(tens)
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=1e-5)


def test_official_inits():
    lotr = _shared(tenpeft.inject(tiny_model("bert"), "lotr", rank=4), "lotr_all")
    assert torch.count_nonzero(lotr.core_1) == 0 and 0.8 < lotr.core_0.std() < 1.2 and 0.8 < lotr.core_2.std() < 1.2
    fact = _shared(tenpeft.inject(tiny_model("bert"), "fact_tt", rank=4), "fact_all")
    assert torch.count_nonzero(fact.core_2) == 0 and fact.core_0.abs().max() <= 1 / 48 ** 0.5
    assert fact.core_1.abs().max() <= 0.5
    tk = _shared(tenpeft.inject(tiny_model("bert"), "fact_tk", rank=4), "fact_all")
    assert torch.count_nonzero(tk.factor_1) == 0 and torch.count_nonzero(tk.core) > 0
    tens = _shared(tenpeft.inject(tiny_model("bert"), "tenslora", rank=4), "tenslora_all")
    assert torch.count_nonzero(tens.core) == 0
    torch.testing.assert_close(tens.factor_0.T @ tens.factor_0, torch.eye(4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method, kwargs, message", [
    ("tenslora", dict(layout="att_heads"), r"layout='att_heads': join distinct names from \['att', 'depth', 'qkv'\]"),
    ("tenslora", dict(layout="qkv_qkv"), "join distinct names"),
    ("metatt", dict(heads=True), r"a head mode splits attention matrices only; roles \['ffn_in', 'ffn_out'\]"),
    ("fact_tt", dict(init="kaiming"), r"init='kaiming' is not one of \('default', 'std'\)"),
    ("lotr", dict(alpha=2.0, scale=0.5), "give alpha"),
    ("krona", dict(shapes={"48x48": [2, 3, 8, 6, 8]}), "needs a 4-way shape"),
])
def test_bad_input_leaves_the_model_untouched(method, kwargs, message):
    model = tiny_model("bert")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(tenpeft.TenpeftError, match=message):
        tenpeft.inject(model, method, **kwargs)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[n], before[n]) for n in before)
    assert all(p.requires_grad for p in model.parameters())


def test_stack_modes_are_checked():
    from tenpeft.layouts.stack import check_modes

    for modes in (("in", "stack"), ("in", "out", "depth"), ("in", "out", "layer", "stack"), ("in", "in", "out")):
        with pytest.raises(tenpeft.TenpeftError, match="modes"):
            check_modes(modes)


def test_quanta_circuit_equals_the_official_einsum():
    """The official forward for 4 axes (quanta/tuners/quanta.py builds it with opt_einsum),
    ``...abcd,ghcd,flbh,epal,jkfg,ioek,mnij->...mnop`` over the gates in order, equals the format's
    contraction (float64)."""
    from tenpeft.formats.quanta import Quanta

    sizes = (3, 2, 4, 2)
    circuit = Quanta(sizes + sizes, zero_factor=None, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    _random(circuit, gen)
    x = torch.randn(5, *sizes, generator=gen, dtype=torch.float64)
    gates = [getattr(circuit, n) for n in circuit.factor_names]
    official = torch.einsum("zabcd,ghcd,flbh,epal,jkfg,ioek,mnij->zmnop", x, *gates)
    torch.testing.assert_close(circuit.contract(x, (4, 5, 6, 7), (0, 1, 2, 3)), official, rtol=0, atol=1e-10)


def test_quanta_count_at_llama_2_7b():
    """The official LLaMA-2-7B runs: Q and V, axes 16-8-8-4: ``sum_{i<j} (d_i d_j)^2 = 43,008`` per matrix,
    2,752,512 for 64 matrices (0.041% of 6.74B, the paper's figure)."""
    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    model = tenpeft.inject(build_model(config, "base", device="meta"), "quanta",
                           shapes={"4096x4096": [16, 8, 8, 4, 16, 8, 8, 4]})
    assert tenpeft.parameter_report(model).components["factors"] == 64 * 43_008


def test_split_into():
    """Each side of a QuanTA matrix: exactly ``k`` factors, descending, as even as the size allows."""
    from tenpeft.shapes import split_into

    assert [split_into(n, k) for n, k in ((4096, 4), (768, 4), (48, 4), (24, 4), (7, 3))] == [
        (8, 8, 8, 8), (8, 6, 4, 4), (4, 3, 2, 2), (3, 2, 2, 2), (7, 1, 1)]


@pytest.mark.parametrize("method, kwargs", [("lotr", {}), ("fact_tt", {}), ("metatt", {}), ("lorta_tt", {}),
                                            ("lora", {"format": "tt"})])
def test_tt_rank_one_forward_equals_delta_weight(method, kwargs):
    """At TT rank 1 every bond of the first core has size 1 and its boundary bond joins no other core;
    the split of that core must use the bond it shares (the equal-budget study's rank-1 LoTR crashed)."""
    model = tenpeft.inject(tiny_model("bert"), method, rank=1, **kwargs)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    for wrapper in (m for m in model.modules() if isinstance(m, ParallelUpdate)):
        x = torch.randn(2, 3, wrapper.in_features, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(wrapper(x) - wrapper.base(x), x @ wrapper.delta_weight().T, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method, fmt", [("lotr", "cp"), ("lotr", "tucker"), ("fact_tt", "cp"), ("fact_tk", "tt"),
                                         ("metatt", "cp")])
def test_another_format_takes_tenpeft_init(method, fmt):
    """The official inits name the official format's factors; in another format the 0.02-std rule applies
    (the format's default factor zero), and the model starts as the base."""
    base = tiny_model("bert")
    batch = tiny_batch(base)
    model = tenpeft.inject(tiny_model("bert"), method, format=fmt, rank=2)
    assert torch.equal(logits(model, batch), logits(base, batch))
    assert tenpeft.parameter_report(model).matches_formula
