"""The methods the benchmarks compare, built on one seeded random-init base: the base model
(BERT-base or a LLaMA-7B-dims slice), sharing its big frozen weights between methods, the
``MethodSpec`` builders (tenpeft, PEFT, the official LoRETTA package, full fine-tuning, a
frozen-base floor) and the method lists of each regime.

Used by ``train_step.py`` and ``profile_step.py``."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tenpeft.structure import TINY_SIZES

BERT_METHODS = ["floor", "full", "peft_lora", "peft_lora_qkvo", "peft_vera", "lora", "vera", "nola", "loretta_rep",
                "loretta_rep_lora_set", "lorta", "lorta_qv", "lorta_tucker", "lorta_tt", "adapter", "loretta_adp",
                "official_loretta_rep", "official_loretta_adp"]
LLAMA_METHODS = ["floor", "peft_lora_qkvo", "lora_qkvo", "lorta", "lorta_tucker", "lorta_tt"]

# tenpeft methods that put a parallel update on a weight (targets: <= 1.02x / 1.05x PEFT LoRA)
PARALLEL = ["lora", "vera", "nola", "loretta_rep", "loretta_rep+norms", "loretta_rep_lora_set", "lorta", "lorta_qv", "lorta_tucker",
            "lorta_tt"]
SHARED_TENSOR = ["lorta", "lorta_tucker", "lorta_tt"]


# ----- the base model ---------------------------------------------------------------------------
# --tiny-model (gpu.sh's CPU dry run): the same families at toy sizes, to check the plumbing in seconds. They are
# the core's tiny sizes, wider on purpose (the sizes the dry run was written with): hidden 64, so that the serial
# adapters' default bottleneck of 64 is no wider than the model, an FFN of 128 and 1,000 tokens; the LLaMA one keeps
# the 7B slice's shape: as many KV heads as heads and its FFN ratio (172 = 64 x 11008 / 4096). The positions stay
# the full-size config's, as the regimes' 128-token inputs need.
_TINY_BERT = {**TINY_SIZES, "hidden_size": 64, "intermediate_size": 128, "vocab_size": 1000}
TINY = {"bert": _TINY_BERT, "llama": {**_TINY_BERT, "num_key_value_heads": 4, "intermediate_size": 172}}


def base_config(family: str, tiny: bool = False):
    """The benchmark's config of ``family``; ``tiny``: the same with the toy sizes of ``TINY``."""
    config = _full_size_config(family)
    for key, value in (TINY[family] if tiny else {}).items():
        setattr(config, key, value)
    return config


def _full_size_config(family: str):
    if family == "bert":
        from transformers import BertConfig

        # BertConfig() defaults: 12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522
        return BertConfig(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                       vocab_size=32000, num_hidden_layers=2, attention_dropout=0.0)


def make_base(family: str, dtype: torch.dtype, device: torch.device, seed: int = 0, tiny: bool = False) -> nn.Module:
    """The seeded random-init base (fp32 init, then cast), in train mode; ``tiny``: toy sizes."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = base_config(family, tiny)
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    model = auto.from_config(config)
    model.to(device=device, dtype=dtype)
    return model.train()


def shared_weights(base: nn.Module) -> dict[int, nn.Parameter]:
    """The big frozen weights (linears and embeddings of the backbone) that methods may share."""
    memo = {}
    for name, module in base.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.numel() >= 65536 \
                and not name.startswith(("classifier", "score")):
            memo[id(module.weight)] = module.weight
    return memo


def clone(base: nn.Module, share: bool) -> nn.Module:
    """A copy of ``base``; with ``share`` the big frozen weights are the same tensors (no method
    below changes them), everything else (norms, biases, the head) is the method's own."""
    return copy.deepcopy(base, dict(shared_weights(base)) if share else {})


# ----- methods --------------------------------------------------------------------------------
@dataclass
class MethodSpec:
    name: str
    impl: str  # tenpeft | peft | loretta (official) | baseline
    build: Callable[[nn.Module, str], nn.Module]  # (model, family) -> model to call
    shares_base: bool = True
    note: str = ""


def _tenpeft(method: str, **kw):
    def build(model, family):
        import tenpeft

        tenpeft.inject(model, method, **kw)
        return model
    return build


def _floor(model, family):
    for p in model.parameters():
        p.requires_grad_(False)
    norm = model.bert.embeddings.LayerNorm if family == "bert" else model.model.layers[0].input_layernorm
    for p in norm.parameters():
        p.requires_grad_(True)
    return model


def _full(model, family):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _peft(kind: str, qkvo: bool = False):
    def build(model, family):
        import peft

        if family == "bert":
            targets = ["query", "key", "value", "attention.output.dense"] if qkvo else ["query", "value"]
            task = "SEQ_CLS"  # trains the classifier like tenpeft's head="dense"
        else:
            targets = ["q_proj", "k_proj", "v_proj", "o_proj"] if qkvo else ["q_proj", "v_proj"]
            task = "CAUSAL_LM"
        if kind == "lora":
            config = peft.LoraConfig(r=8, lora_alpha=8, target_modules=targets, lora_dropout=0.0, task_type=task)
        else:
            config = peft.VeraConfig(r=256, target_modules=targets, task_type=task)
        return peft.get_peft_model(model, config)
    return build


def _official(kind: str):
    def build(model, family):
        try:
            import loretta
        except ImportError as err:
            raise SkipMethod(f"the official LoRETTA package is not installed ({err}); `pip install loretta`") from None
        if family != "bert":
            raise SkipMethod("official LoRETTA is only benchmarked on the BERT regimes")
        if kind == "rep":
            # LoRETTA_rep as in its README: bottleneck r=8, TT rank 5, alpha = r (scale 1), Q and V
            config = loretta.LorettaRepConfig(r=8, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0,
                                              bias="none", task_type="SEQ_CLS", tensor_rank=5)
        else:
            # LoRETTA_adp: bottleneck 64, TT rank 5, relu, after attention output and FFN output
            # ("output.dense" suffix = attention.output.dense and output.dense of every layer)
            config = loretta.LorettaAdpConfig(bottleneck_size=64, non_linearity="relu", adapter_dropout=0.0,
                                              target_modules=["output.dense"], scaling=1.0, bias="none",
                                              task_type="SEQ_CLS", tensor_rank=5)
        return loretta.get_peft_model(model, config)
    return build


class SkipMethod(Exception):
    """A method that cannot run here; the message says why."""


METHOD_SPECS = {s.name: s for s in [
    MethodSpec("floor", "baseline", _floor, note="frozen base, only the first norm trainable"),
    MethodSpec("full", "baseline", _full, shares_base=False, note="every parameter trainable"),
    MethodSpec("peft_lora", "peft", _peft("lora"), note="LoraConfig(r=8, lora_alpha=8, q,v)"),
    MethodSpec("peft_lora_qkvo", "peft", _peft("lora", qkvo=True), note="LoraConfig(r=8, lora_alpha=8, q,k,v,o)"),
    MethodSpec("peft_vera", "peft", _peft("vera"), note="VeraConfig(r=256, q,v)"),
    MethodSpec("lora", "tenpeft", _tenpeft("lora")),
    MethodSpec("lora_qkvo", "tenpeft", _tenpeft("lora", roles=("q", "k", "v", "o")), note="lora on q,k,v,o"),
    MethodSpec("vera", "tenpeft", _tenpeft("vera")),
    MethodSpec("vera_r8", "tenpeft", _tenpeft("vera", rank=8),
               note="rank=8: LoRA's rank, to separate VeRA's rank-256 matmuls from its per-update overhead"),
    MethodSpec("nola", "tenpeft", _tenpeft("nola")),
    MethodSpec("loretta_rep", "tenpeft", _tenpeft("loretta_rep")),
    MethodSpec("loretta_rep+norms", "tenpeft", _tenpeft("loretta_rep", train_norms=True),
               note="train_norms=True: since the defaults follow the official code, the same as loretta_rep"),
    MethodSpec("loretta_rep_lora_set", "tenpeft", _tenpeft("loretta_rep", train_norms=False, head="dense"),
               note="norms frozen, dense head: PEFT LoRA's trainable set around the TT updates"),
    MethodSpec("lorta", "tenpeft", _tenpeft("lorta"), note="defaults: q,k,v,o"),
    MethodSpec("lorta_qv", "tenpeft", _tenpeft("lorta", roles=("q", "v")), note='roles=("q", "v")'),
    MethodSpec("lorta_tucker", "tenpeft", _tenpeft("lorta_tucker"), note="q,k,v,o"),
    MethodSpec("lorta_tt", "tenpeft", _tenpeft("lorta_tt"), note="q,k,v,o"),
    MethodSpec("adapter", "tenpeft", _tenpeft("adapter")),
    MethodSpec("loretta_adp", "tenpeft", _tenpeft("loretta_adp")),
    MethodSpec("official_loretta_rep", "loretta", _official("rep"), note="loretta 0.1.0 LorettaRepConfig"),
    MethodSpec("official_loretta_adp", "loretta", _official("adp"), note="loretta 0.1.0 LorettaAdpConfig"),
]}
