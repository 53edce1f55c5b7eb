"""Model structure: layers, heads, KV heads, head dim and the Q/K/V/O and FFN linears of a model.

Families are registered by ``config.model_type`` in ``FAMILIES`` (one place; installed plugins are
loaded when a model_type is not found); an unknown family raises a TenpeftError that says how to
name modules by hand or register the family.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from .errors import TenpeftError
from .plugins import lookup

ATTENTION_ROLES = ("q", "k", "v", "o")
FFN_ROLES = ("ffn_gate", "ffn_in", "ffn_out")
ROLE_ALIASES = {"attn": ATTENTION_ROLES, "ffn": FFN_ROLES, "all": ATTENTION_ROLES + FFN_ROLES}


@dataclass(frozen=True)
class FamilySpec:
    """Where a family keeps its blocks: ``layer_pattern`` matches the end of a layer module's name
    (one group: the layer index); ``roles`` maps a role to the linear's name inside the layer;
    ``fused_qkv`` names one linear whose output rows are three contiguous blocks [Q | K | V]
    (GPT-2's ``c_attn``), or with ``fused_per_head`` the per-head interleaving [q_h | k_h | v_h] for
    every head h (DeBERTa v1's ``in_proj``, split by transformers as ``view(heads, 3 * head_dim)``
    then ``chunk(3)``). ``decoder``: a causal LM family (built as ``AutoModelForCausalLM``; encoders
    as sequence classifiers). ``tiny``: a zero-argument callable returning a tiny random-init test
    config of the family, of the sizes ``TINY_SIZES`` (None: none)."""

    layer_pattern: str
    roles: dict[str, str]
    fused_qkv: str | None = None
    fused_per_head: bool = False
    decoder: bool = False
    tiny: Callable[[], Any] | None = None


def tiny_config(config_class: str, **kwargs) -> Callable[[], Any]:
    """A ``FamilySpec.tiny``: builds ``transformers.<config_class>(**kwargs)`` when called."""
    return functools.partial(_make_config, config_class, **kwargs)


def _make_config(config_class: str, **kwargs):
    import transformers

    return getattr(transformers, config_class)(**kwargs)


# The sizes of every tiny random-init model (the families' FamilySpec.tiny below; the lab's study models and the
# benchmarks' toy models start from them and say what they change)
TINY_SIZES = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=101)
_TINY_ENCODER = dict(TINY_SIZES, max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_TINY_DECODER = dict(TINY_SIZES, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                     eos_token_id=2)
_GPT2_SIZES = dict(n_embd=TINY_SIZES["hidden_size"], n_layer=TINY_SIZES["num_hidden_layers"],
                   n_head=TINY_SIZES["num_attention_heads"], vocab_size=TINY_SIZES["vocab_size"])  # its FFN: 4 x n_embd
_BERT_LIKE = dict(layer_pattern=r"encoder\.layer\.(\d+)", roles={
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"})
_LLAMA_LIKE = dict(layer_pattern=r"layers\.(\d+)", roles={
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_in": "mlp.up_proj", "ffn_out": "mlp.down_proj"}, decoder=True)

FAMILIES: dict[str, FamilySpec] = {
    "bert": FamilySpec(**_BERT_LIKE, tiny=tiny_config("BertConfig", **_TINY_ENCODER)),
    "roberta": FamilySpec(**_BERT_LIKE, tiny=tiny_config("RobertaConfig", **_TINY_ENCODER, pad_token_id=1)),
    "deberta-v2": FamilySpec(r"encoder\.layer\.(\d+)", {
        "q": "attention.self.query_proj", "k": "attention.self.key_proj",
        "v": "attention.self.value_proj", "o": "attention.output.dense",
        "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
        tiny=tiny_config("DebertaV2Config", **_TINY_ENCODER, relative_attention=True, pos_att_type=["p2c", "c2p"],
                         position_buckets=8, max_relative_positions=16)),
    "deberta": FamilySpec(r"encoder\.layer\.(\d+)", {
        "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
        fused_qkv="attention.self.in_proj", fused_per_head=True,
        tiny=tiny_config("DebertaConfig", **_TINY_ENCODER, relative_attention=True, pos_att_type=["c2p", "p2c"],
                         max_relative_positions=16)),
    "llama": FamilySpec(**_LLAMA_LIKE, tiny=tiny_config("LlamaConfig", **_TINY_DECODER, attention_bias=True)),
    "mistral": FamilySpec(**_LLAMA_LIKE, tiny=tiny_config("MistralConfig", **_TINY_DECODER)),
    "qwen2": FamilySpec(**_LLAMA_LIKE, tiny=tiny_config("Qwen2Config", **_TINY_DECODER)),
    "qwen3": FamilySpec(**_LLAMA_LIKE, tiny=tiny_config("Qwen3Config", **_TINY_DECODER, head_dim=12)),
    "gpt2": FamilySpec(r"h\.(\d+)", {"o": "attn.c_proj", "ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"},
                       fused_qkv="attn.c_attn", decoder=True, tiny=tiny_config(
                           "GPT2Config", **_GPT2_SIZES, n_positions=40, resid_pdrop=0.0, embd_pdrop=0.0,
                           attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
}


def register_family(model_type: str, spec: FamilySpec) -> None:
    """Teach tenpeft a new ``config.model_type``."""
    FAMILIES[model_type] = spec


_CAUSAL_LM_ARCHITECTURES = ("ForCausalLM", "LMHeadModel")


def is_decoder(config) -> bool:
    """Whether ``config``'s model is a causal LM: ``config.is_decoder``, else its registered family's
    ``FamilySpec.decoder``; for a model type with no registered family, whether an ``architectures``
    name is a causal LM's (``...ForCausalLM``, ``...LMHeadModel``)."""
    if getattr(config, "is_decoder", False):
        return True
    spec = lookup(FAMILIES, getattr(config, "model_type", None))
    if spec is not None:
        return spec.decoder
    return any(str(a).endswith(_CAUSAL_LM_ARCHITECTURES) for a in getattr(config, "architectures", None) or ())


@dataclass(frozen=True)
class Target:
    """One weight to adapt: module ``name``; ``out_slice`` restricts it to output rows of a fused
    linear: ``(start, stop)`` the rows ``[start, stop)``; ``(start, stop, period)`` the rows
    ``[start, stop)`` of every block of ``period`` rows (per-head interleaving). ``role`` is
    q/k/v/o/ffn_* or, for hand-named modules, the name with its layer index replaced by ``*``."""

    name: str
    role: str
    layer: int | None
    in_features: int
    out_features: int
    out_slice: tuple[int, int] | tuple[int, int, int] | None = None


@dataclass
class ModelStructure:
    """What the engine knows of a model (see module docstring)."""

    family: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    backbone: str
    layers: list[dict[str, Target]] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of an nn.Linear or a transformers Conv1D (weight in x out),
    also when tenpeft has wrapped it."""
    if getattr(module, "is_tenpeft_wrapper", False):
        module = module.base
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return tuple(module.weight.shape)
    return None


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, nn.LayerNorm) or name.endswith(("rmsnorm", "layernorm"))


_TASK_HEADS = ("SequenceClassification", "TokenClassification", "QuestionAnswering", "MultipleChoice")


def backbone_prefix(model: nn.Module) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    return prefix if prefix and isinstance(getattr(model, prefix, None), nn.Module) else ""


def task_head(model: nn.Module) -> list[str]:
    """Top-level modules of a task head (new, randomly initialised); empty for LMs and bare models."""
    if not any(kind in type(model).__name__ for kind in _TASK_HEADS):
        return []
    prefix = backbone_prefix(model)
    return [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]


def norm_modules(model: nn.Module) -> list[str]:
    """Names of the LayerNorm/RMSNorm modules outside the task head."""
    head = tuple(task_head(model))
    return [n for n, m in model.named_modules() if _is_norm(m) and not n.startswith(head)]


def discover(model: nn.Module) -> ModelStructure:
    """Find layers, heads and Q/K/V/O/FFN linears of a known family, or raise a TenpeftError."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = lookup(FAMILIES, model_type)
    if spec is None:
        raise TenpeftError(
            f"model family {model_type!r} ({type(model).__name__}) is not known to tenpeft (known: "
            f"{sorted(FAMILIES)}). Name the linears to adapt with target_modules=[...] (names, suffixes "
            f"or one regex), or register the family: tenpeft.register_family({model_type!r}, FamilySpec(...))")
    layer_re = re.compile(r"(?:^|\.)" + spec.layer_pattern + r"$")
    layer_names = sorted(((int(m.group(1)), n) for n in dict(model.named_modules())
                          if (m := layer_re.search(n))))
    num_layers = config.num_hidden_layers
    if [i for i, _ in layer_names] != list(range(num_layers)):
        raise TenpeftError(f"found layers {[n for _, n in layer_names][:4]}... for family {model_type!r} "
                           f"but the config says {num_layers} layers; pass target_modules=[...] by hand")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    structure = ModelStructure(model_type, num_layers, heads, kv_heads, head_dim, config.hidden_size,
                               backbone_prefix(model), norms=norm_modules(model), head=task_head(model))
    modules = dict(model.named_modules())
    for index, layer_name in layer_names:
        structure.layers.append(_layer_targets(modules, layer_name, index, spec, structure))
    return structure


def _layer_targets(modules, layer_name, index, spec, s: ModelStructure) -> dict[str, Target]:
    targets = {}
    for role, rel in spec.roles.items():
        name = f"{layer_name}.{rel}"
        dims = linear_dims(modules.get(name))
        if dims is None:
            raise TenpeftError(f"expected a linear layer at {name!r} for role {role!r} of family "
                               f"{s.family!r}; pass target_modules=[...] by hand")
        targets[role] = Target(name, role, index, *dims)
    if spec.fused_qkv:
        targets.update(_fused_targets(modules, f"{layer_name}.{spec.fused_qkv}", index, spec, s))
    _check_attention_dims(targets, s)
    return targets


def _fused_targets(modules, name, index, spec, s: ModelStructure) -> dict[str, Target]:
    """Q, K, V as row slices of the fused linear ``name``: three blocks, or interleaved per head."""
    dims = linear_dims(modules.get(name))
    if dims is None:
        raise TenpeftError(f"expected a fused QKV linear at {name!r} for family {s.family!r}; "
                           f"pass target_modules=[...] by hand")
    in_f, out_f = dims
    if spec.fused_per_head and s.num_kv_heads != s.num_heads:
        raise TenpeftError(f"fused QKV {name!r} is interleaved per head, which needs as many KV heads as "
                           f"heads; the config says {s.num_kv_heads} KV heads and {s.num_heads} heads")
    widths = (s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim)
    if sum(widths) != out_f:
        raise TenpeftError(f"fused QKV {name!r} has {out_f} outputs, expected {sum(widths)}")
    if spec.fused_per_head:
        d = s.head_dim
        return {role: Target(name, role, index, in_f, widths[i], (i * d, (i + 1) * d, 3 * d))
                for i, role in enumerate("qkv")}
    starts = (0, widths[0], widths[0] + widths[1])
    return {role: Target(name, role, index, in_f, w, (a, a + w)) for role, w, a in zip("qkv", widths, starts)}


def _check_attention_dims(targets: dict[str, Target], s: ModelStructure) -> None:
    expected = {"q": s.num_heads, "k": s.num_kv_heads, "v": s.num_kv_heads}
    for role, heads in expected.items():
        if role in targets and targets[role].out_features != heads * s.head_dim:
            raise TenpeftError(f"{targets[role].name} has {targets[role].out_features} outputs, but "
                               f"{heads} heads x head_dim {s.head_dim} were expected from the config")
    if "o" in targets and targets["o"].in_features != s.num_heads * s.head_dim:
        raise TenpeftError(f"{targets['o'].name} takes {targets['o'].in_features} inputs, expected "
                           f"{s.num_heads} heads x {s.head_dim}")


def expand_roles(roles: Sequence[str]) -> tuple[str, ...]:
    """Expand aliases (attn, ffn, all) and check every role is known."""
    known = set(ROLE_ALIASES["all"])
    out: list[str] = []
    for role in roles:
        for r in ROLE_ALIASES.get(role, (role,)):
            if r not in known:
                raise TenpeftError(f"unknown role {role!r}; use {sorted(known)} or {sorted(ROLE_ALIASES)}")
            if r not in out:
                out.append(r)
    return tuple(out)
