"""Golden tests against the official implementations: the same base, the same factor values, the same
outputs (in float64, to 1e-10 or tighter), and where the two differ by a fixed re-indexing, that
re-indexing stated and checked exactly.

* LoRETTA (the official ``loretta`` 0.1.0 package): ``loretta_rep`` and ``loretta_adp``, TT layer by
  TT layer. The official tensorized linear computes ``y = x @ T.reshape(in, out)``, so it holds
  ``W^T`` (input index major); tenpeft holds ``W = T'.reshape(out, in)`` (output index major). The
  cores map by reversing the train, ``tenpeft core_i = official core_{n-1-i}.permute(2, 1, 0)``, over
  the reversed shape; that gives the same matrix with each of its two indices **digit-reversed**
  (the mixed-radix digits of the index read in the opposite order, ``_digit_reversal``). No mapping
  at the same TT ranks gives the identical matrix: the two group the digits of the model-dim index
  differently (the official rank-5 ``lora_A`` of 768 needs TT ranks ``[5, 60, 8]`` over tenpeft's
  ``[8, 12, 8, 8]`` without the permutation, ``[5, 5, 5]`` with it). So the package's model-level
  wrappers (``LorettaRepModel``, ``LorettaAdpModel``; they do run with transformers 5.24) cannot give
  identical logits, and these tests use the package's layer classes on one base linear, at the
  official table shapes (768 wide; the only aligned entries of the table for r=8 and b=64).
* PEFT LoRA and VeRA (``peft.get_peft_model``): identical logits of whole tiny models.
* LoRTA (the official PEFT fork ihounie/lorta is not on PyPI): its forward is transcribed below
  (``_official_lorta_dw``); ``o`` is identical, ``q``/``k``/``v`` are the transpose (the official
  code puts the model dim on the rows of every ``dW``; tenpeft follows the paper).
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tenpeft
from helpers import logits
from models import tiny_batch, tiny_model
from tenpeft.layouts.bottleneck import BottleneckUpdate, TensorizedLinear
from tenpeft.placements import ParallelUpdate, SerialAdapter

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # loretta's cuda autocast

EXACT = dict(rtol=0.0, atol=1e-10)  # float64 everywhere; the measured differences are ~1e-16 .. 1e-13


def _explicit_scale(method: str, scale: float) -> dict:
    """``scale=`` with ``alpha=None`` where the config has an ``alpha`` field, so that the test never
    depends on tenpeft's default alpha."""
    fields = {f.name for f in dataclasses.fields(tenpeft.get_method(method).config)}
    return {"scale": scale, **({"alpha": None} if "alpha" in fields else {})}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ----- LoRETTA: TT layers ---------------------------------------------------------------------------------------


def _digit_reversal(radix) -> torch.Tensor:
    """``p[i'] = i``: ``i'`` indexes the reversed radix, ``i`` the same digits, in reverse, in ``radix``."""
    n = math.prod(radix)
    return torch.arange(n).reshape(*radix).permute(*reversed(range(len(radix)))).reshape(-1)


def _split(shape, lead: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The modes of ``shape`` indexing the leading ``lead`` rows of the row-major view, and the rest."""
    for k in range(1, len(shape)):
        if math.prod(shape[:k]) == lead:
            return tuple(shape[:k]), tuple(shape[k:])
    raise AssertionError(f"{shape} does not split at {lead}")


def _official_layer(wrapped) -> tuple[list[torch.Tensor], tuple[int, ...]]:
    """Cores and shape of an official ``wrapped_linear_layers`` (``y = x @ T.reshape(in, out) + bias``)."""
    return list(wrapped.layer.tensor.factors), tuple(wrapped.layer.tensor_shape)


@torch.no_grad()
def _copy_reversed(factorization, cores) -> None:
    """tenpeft ``core_i`` <- official ``core_{n-1-i}`` with its two bond axes swapped."""
    for i, core in enumerate(reversed(cores)):
        getattr(factorization, f"core_{i}").copy_(core.permute(2, 1, 0))


def test_loretta_rep_layer_equals_official_up_to_digit_reversal():
    """``loretta.tuners.loretta_rep.Linear(768, 768, r=8, lora_alpha=16, tensor_rank=5)`` (official
    table shape ``[8, 8, 12, 8]`` for both ``lora_A`` and ``lora_B``; ``scaling = alpha / r = 2``) and
    a tenpeft ``BottleneckUpdate`` with ``scale=2`` and ``shapes`` the reversed official shapes
    (``U = u`` from ``lora_B``, ``V = v`` from ``lora_A``, cores reversed). Exactly:
    ``ΔW_tenpeft == ΔW_official[π_out][:, π_in]``, ``π_in`` the digit reversal over ``(8, 8, 12)``
    (``lora_A``'s input modes), ``π_out`` over ``(8, 12, 8)`` (``lora_B``'s output modes); the
    bottleneck is one mode, so its reversal is trivial. The layer outputs agree on the base permuted
    the same way: ``tenpeft(x[π_in]) == official(x)[π_out]``. Without the permutation they differ."""
    loretta_rep = pytest.importorskip("loretta.tuners.loretta_rep")
    torch.manual_seed(0)
    d, r, alpha, rank = 768, 8, 16, 5
    official = loretta_rep.Linear(d, d, r=r, lora_alpha=alpha, lora_dropout=0.0, merge_weights=False,
                                  tensor_rank=rank).double()
    official.train(False)
    cores_a, shape_a = _official_layer(official.lora_A)  # x (in) -> r: W_A^T = T_A.reshape(in, r)
    cores_b, shape_b = _official_layer(official.lora_B)  # r -> out:     W_B^T = T_B.reshape(r, out)
    assert official.scaling == alpha / r and shape_a == shape_b == (8, 8, 12, 8)  # the paper's table

    update = BottleneckUpdate(d, d, "tt", rank, r, scale=alpha / r, dtype=torch.float64,
                              shapes={f"{d}x{r}": shape_b[::-1], f"{r}x{d}": shape_a[::-1]})
    _copy_reversed(update.u.factorization, cores_b)
    _copy_reversed(update.v.factorization, cores_a)

    in_modes, r_modes = _split(shape_a, d)
    r_modes_b, out_modes = _split(shape_b, r)
    assert (in_modes, r_modes, r_modes_b, out_modes) == ((8, 8, 12), (8,), (8,), (8, 12, 8))
    pi_in, pi_out = _digit_reversal(in_modes), _digit_reversal(out_modes)

    with torch.no_grad():
        eye = torch.eye(d, dtype=torch.float64)
        dw_official = (official(eye) - F.linear(eye, official.weight, official.bias)).T  # (out x in)
        dw = update.delta_weight()
        assert _max_diff(dw, dw_official[pi_out][:, pi_in]) <= 1e-12 * dw_official.abs().max()
        assert _max_diff(dw, dw_official) > 0.5 * dw_official.abs().max()  # the permutation is real

        base = nn.Linear(d, d, dtype=torch.float64)
        base.weight.copy_(official.weight[pi_out][:, pi_in])
        base.bias.copy_(official.bias[pi_out])
        ours = ParallelUpdate(base, [update], [None])
        x = torch.randn(3, 5, d, dtype=torch.float64)
        torch.testing.assert_close(ours(x[..., pi_in]), official(x)[..., pi_out], **EXACT)


def test_loretta_adp_layer_equals_official_up_to_digit_reversal():
    """``loretta.tuners.loretta_adp.Linear`` (output adapter, 768 -> 64 -> 768, tanh, TT rank 5,
    official shape ``[8, 8, 12, 8, 8]`` for both maps, biased, ``scaling=1.0``) and tenpeft's
    ``SerialAdapter`` with two ``TensorizedLinear`` (the same 768/64 shape, reversed, cores
    reversed, biases permuted). Exactly, for the adapter branch ``g(h) = up(tanh(down(h)))``:
    ``g_tenpeft(h[π_in]) == g_official(h)[π_out]``, ``π_in`` the digit reversal over ``(8, 8, 12)``
    (``down``'s input modes), ``π_out`` over ``(12, 8, 8)`` (``up``'s output modes); the bottleneck
    reversals (over ``(8, 8)`` on both sides) cancel through the elementwise tanh. ``π_out`` is the
    inverse of ``π_in``, not ``π_in``: no relabeling of the hidden state maps one adapter onto the
    other, so this holds per layer, not for a whole model."""
    loretta_adp = pytest.importorskip("loretta.tuners.loretta_adp")
    torch.manual_seed(0)
    d, b, rank = 768, 64, 5
    official = loretta_adp.Linear(d, d, adapter_type="output_adapter", bottleneck_size=b, non_linearity="tanh",
                                  adapter_dropout=0.0, scaling=1.0, init_weights="bert", tensorized=True,
                                  tensor_rank=rank).double()
    official.train(False)
    cores_down, shape_down = _official_layer(official.adapter_down)  # W_down^T = T.reshape(d, b)
    cores_up, shape_up = _official_layer(official.adapter_up)  # W_up^T = T.reshape(b, d)
    assert shape_down == shape_up == (8, 8, 12, 8, 8)

    down = TensorizedLinear(d, b, "tt", rank, zero=False, shapes={f"{b}x{d}": shape_down[::-1]}, dtype=torch.float64)
    up = TensorizedLinear(b, d, "tt", rank, zero=True, shapes={f"{d}x{b}": shape_up[::-1]}, dtype=torch.float64)
    _copy_reversed(down.matrix.factorization, cores_down)
    _copy_reversed(up.matrix.factorization, cores_up)

    in_modes, b_out_modes = _split(shape_down, d)
    b_in_modes, out_modes = _split(shape_up, b)
    assert (in_modes, b_out_modes, b_in_modes, out_modes) == ((8, 8, 12), (8, 8), (8, 8), (12, 8, 8))
    pi_in, pi_out = _digit_reversal(in_modes), _digit_reversal(out_modes)
    pi_b = _digit_reversal(b_out_modes)
    assert torch.equal(pi_b, _digit_reversal(b_in_modes))  # the bottleneck reversal cancels
    assert torch.equal(pi_out[pi_in], torch.arange(d)) and not torch.equal(pi_in, pi_out)

    with torch.no_grad():
        down.bias.copy_(official.adapter_down.layer.bias[pi_b])
        up.bias.copy_(official.adapter_up.layer.bias[pi_out])
        ours = SerialAdapter(nn.Identity(), down, up, "tanh")

        x = torch.randn(3, 5, d, dtype=torch.float64)
        h = F.linear(x, official.weight, official.bias)
        # the official forward casts the branch input to float32, so in float64 the branch is composed
        # of the official modules as forward composes them (checked against forward itself in float32)
        g_official = official.adapter_up(official.act_fn(official.adapter_down(h))) * official.adapter_scaling
        assert g_official.abs().max() > 1e-2  # the official init is non-zero
        g32 = official.float()(x.float()) - F.linear(x.float(), official.weight, official.bias)
        torch.testing.assert_close(g32, g_official.float(), rtol=0.0, atol=1e-5)
        official.double()
        torch.testing.assert_close(down(h[..., pi_in]), official.adapter_down(h)[..., pi_b], **EXACT)
        torch.testing.assert_close(ours(h[..., pi_in]) - h[..., pi_in], g_official[..., pi_out], **EXACT)


# ----- PEFT LoRA and VeRA: whole tiny models ----------------------------------------------------------------------

PEFT_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}


def _model(family: str):
    return tiny_model(family).double()


def _wrappers(model) -> dict[str, ParallelUpdate]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ParallelUpdate)}


def _check_same_logits(ours, theirs, family):
    batch = tiny_batch(ours)
    base = logits(_model(family), batch)
    mine, peft_out = logits(ours, batch), logits(theirs, batch)
    assert _max_diff(peft_out, base) > 1e-3  # the update is not zero
    torch.testing.assert_close(mine, peft_out, **EXACT)


@pytest.mark.parametrize("family", list(PEFT_TARGETS))
def test_lora_equals_peft(family):
    """PEFT ``LoraConfig(r=4, lora_alpha=8)`` on q, v (``scaling = 2``), ``lora_B`` perturbed from its
    zero init; tenpeft ``lora`` with ``scale=2``, ``factor_0 = lora_B.weight`` (out x r),
    ``factor_1 = lora_A.weight^T`` (in x r): identical logits (float64, atol 1e-10)."""
    peft = pytest.importorskip("peft")
    r, alpha = 4, 8
    theirs = peft.get_peft_model(_model(family), peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                                 target_modules=PEFT_TARGETS[family])).double()
    ours = tenpeft.inject(_model(family), "lora", rank=r, adapter_dtype="float64", **_explicit_scale("lora", alpha / r))
    gen = torch.Generator().manual_seed(0)
    wrappers = _wrappers(ours)
    assert len(wrappers) == 2 * ours.config.num_hidden_layers
    with torch.no_grad():
        for name, wrapper in wrappers.items():
            layer = theirs.base_model.model.get_submodule(name)
            assert layer.scaling["default"] == alpha / r
            lora_b = layer.lora_B["default"].weight
            lora_b.copy_(torch.randn(lora_b.shape, generator=gen, dtype=lora_b.dtype) * 0.5)
            factors = wrapper.updates[0].factorization
            factors.factor_0.copy_(lora_b)
            factors.factor_1.copy_(layer.lora_A["default"].weight.T)
    _check_same_logits(ours, theirs, family)


@pytest.mark.parametrize("family", list(PEFT_TARGETS))
def test_vera_equals_peft(family):
    """PEFT ``VeraConfig(r=8)`` on q, v (one frozen ``vera_A (r x max_in)``, ``vera_B (max_out x r)``
    shared by every layer and type, sliced per layer); ``lambda_b`` (init 0) and ``lambda_d`` perturbed.
    tenpeft ``vera`` (a layer-stacked CP per type): ``factor_0 = vera_B[:out]``,
    ``factor_1 = vera_A[:, :in]^T``, ``factor_2[l] = lambda_d`` of layer ``l``, ``scaling = lambda_b``:
    identical logits (float64, atol 1e-10). On LLaMA v is 48 -> 24 (GQA), so the slicing is exercised."""
    peft = pytest.importorskip("peft")
    r = 8
    config = peft.VeraConfig(r=r, target_modules=PEFT_TARGETS[family], vera_dropout=0.0, projection_prng_key=0)
    theirs = peft.get_peft_model(_model(family), config).double()
    ours = tenpeft.inject(_model(family), "vera", rank=r, adapter_dtype="float64")
    gen = torch.Generator().manual_seed(0)
    wrappers = _wrappers(ours)
    assert len(wrappers) == 2 * ours.config.num_hidden_layers
    with torch.no_grad():
        for name, wrapper in wrappers.items():
            layer = theirs.base_model.model.get_submodule(name)
            lambda_b, lambda_d = layer.vera_lambda_b["default"], layer.vera_lambda_d["default"]
            lambda_b.copy_(torch.randn(lambda_b.shape, generator=gen, dtype=lambda_b.dtype))
            lambda_d.add_(torch.randn(lambda_d.shape, generator=gen, dtype=lambda_d.dtype))
            update, shared = wrapper.updates[0], wrapper.updates[0].shared
            shared.factor_0.copy_(layer.vera_B["default"][: update.out_features])
            shared.factor_1.copy_(layer.vera_A["default"][:, : update.in_features].T)
            shared.factor_2[update.layer].copy_(lambda_d)
            update.scaling.copy_(lambda_b)
    _check_same_logits(ours, theirs, family)


# ----- LoRTA: the official forward, transcribed --------------------------------------------------------------------

ROLES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "o": "attention.output.dense"}
OFFICIAL_M = {"q": 0, "k": 1, "v": 2, "o": 3}


def _official_lorta_dw(f: dict, layer: int, m: int) -> torch.Tensor:
    """ihounie/lorta ``nlu/src/peft/tuners/lorta/model.py`` ``_compute_weights_from_tensor``:
    ``dW = cat_h [A @ diag(C_h[h] * C_m[m] * C_l[l]) @ B]`` along dim 1, ``(d, H*d_H)`` for every
    matrix; ``layer.py`` then adds ``x @ dW.T * scaling``."""
    return torch.cat([f["A"] @ torch.diag(f["C_h"][h] * f["C_m"][m] * f["C_l"][layer]) @ f["B"]
                      for h in range(f["C_h"].shape[0])], dim=1)


class _OfficialLortaLinear(nn.Module):
    """The official LoRTA layer forward: ``base(x) + x @ dW.T * scaling`` (``transpose``: use ``dW.T``)."""

    def __init__(self, base, dw: torch.Tensor, scaling: float):
        super().__init__()
        self.base, self.dw, self.scaling = base, dw, scaling

    def forward(self, x):
        return self.base(x) + x @ self.dw.T * self.scaling


def _lorta_factors(model, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official-layout factors (``A (d x r)``, ``B (r x d_H)``, ``C_h``, ``C_l``, ``C_m (4 x r)``)."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    shapes = {"A": (c.hidden_size, rank), "B": (rank, c.hidden_size // c.num_attention_heads),
              "C_h": (c.num_attention_heads, rank), "C_l": (c.num_hidden_layers, rank), "C_m": (4, rank)}
    return {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}


def _tenpeft_lorta(f: dict, roles: tuple[str, ...], rank: int, scaling: float):
    """tenpeft ``lorta`` on tiny BERT with the official factors: ``factor_0 = A``, ``factor_1 = B^T``,
    ``factor_2 = C_h``, ``factor_3 = C_l``, ``factor_4`` = the rows of ``C_m`` of ``roles``."""
    model = tenpeft.inject(_model("bert"), "lorta", roles=roles, rank=rank, adapter_dtype="float64",
                           **_explicit_scale("lorta", scaling))
    shared = model.tenpeft_shared["attention"]
    with torch.no_grad():
        for name, value in zip(shared.factor_names, (f["A"], f["B"].T, f["C_h"], f["C_l"],
                                                     f["C_m"][[OFFICIAL_M[r] for r in roles]])):
            getattr(shared, name).copy_(value)
    return model


def _official_model(f: dict, roles: tuple[str, ...], scaling: float, transpose_qkv: bool = False):
    model = _model("bert")
    for layer in range(model.config.num_hidden_layers):
        block = model.bert.encoder.layer[layer]
        for role in roles:
            dw = _official_lorta_dw(f, layer, OFFICIAL_M[role])
            if transpose_qkv and role != "o":
                dw = dw.T
            parent_name, _, attr = ROLES[role].rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, attr, _OfficialLortaLinear(getattr(parent, attr), dw, scaling))
    return model.eval()


def test_lorta_delta_weights_against_official():
    """tenpeft ``lorta`` (CP rank 3, ``scale = lora_alpha / r = 2``) with the official factor values, on
    tiny BERT (d 48, H 4, d_H 12, L 2). Exactly (float64, atol 1e-10), for every layer ``l``:

    (a) ``o``: ``ΔW_o == scaling * dW_o``, the official ``dW`` itself (heads on the input columns);
    (b) ``q``, ``k``, ``v``: ``ΔW_m == scaling * dW_m^T``, i.e. ``cat_h`` along dim 0 of
        ``B^T diag(C_h[h] * C_m[m] * C_l[l]) A^T`` (heads on the output rows, the paper's
        orientation). The official code keeps the model dim on the rows of ``dW`` for q, k, v too,
        so its q/k/v updates are the transpose of tenpeft's (and of the paper's) for the same factors."""
    r, scaling = 3, 6 / 3
    model = _model("bert")
    f = _lorta_factors(model, r)
    ours = _tenpeft_lorta(f, ("q", "k", "v", "o"), r, scaling)
    for layer in range(ours.config.num_hidden_layers):
        block = ours.bert.encoder.layer[layer]
        for role, m in OFFICIAL_M.items():
            dw = _official_lorta_dw(f, layer, m) * scaling
            delta = block.get_submodule(ROLES[role]).delta_weight()
            if role == "o":
                torch.testing.assert_close(delta, dw, **EXACT)
            else:
                torch.testing.assert_close(delta, dw.T, **EXACT)
                paper = torch.cat([f["B"].T @ torch.diag(f["C_h"][h] * f["C_m"][m] * f["C_l"][layer]) @ f["A"].T
                                   for h in range(f["C_h"].shape[0])], dim=0) * scaling
                torch.testing.assert_close(delta, paper, **EXACT)
                assert _max_diff(delta, dw) > 0.1 * dw.abs().max()  # the official orientation differs


def test_lorta_logits_against_official_transcription():
    """Whole-model logits (float64, atol 1e-10) of tenpeft ``lorta`` and the transcribed official
    forward with the same factors: equal with ``o`` alone (tenpeft's ``M = 1``, its ``C_M`` row is the
    official ``C_m[3]``); with q, k, v, o equal to the official forward once its q/k/v ``dW`` are
    transposed, and different from the official forward as written."""
    r, scaling = 3, 2.0
    f = _lorta_factors(_model("bert"), r, seed=1)
    batch = tiny_batch(_model("bert"))
    base = logits(_model("bert"), batch)

    o_only = logits(_official_model(f, ("o",), scaling), batch)
    assert _max_diff(o_only, base) > 1e-3
    torch.testing.assert_close(logits(_tenpeft_lorta(f, ("o",), r, scaling), batch), o_only, **EXACT)

    roles = ("q", "k", "v", "o")
    ours = logits(_tenpeft_lorta(f, roles, r, scaling), batch)
    torch.testing.assert_close(ours, logits(_official_model(f, roles, scaling, transpose_qkv=True), batch), **EXACT)
    assert _max_diff(ours, logits(_official_model(f, roles, scaling), batch)) > 1e-3
