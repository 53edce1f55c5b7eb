"""Model sizes from the papers, and the one model builder (encoder or decoder by ``FamilySpec``)."""
from __future__ import annotations

import contextlib
import os

import torch
import transformers

from .errors import TenpeftError
from .structure import is_decoder

# name -> (transformers config class, arguments)
PRESETS = {
    "deberta-base": ("DebertaConfig", {"num_labels": 2}),  # DeBERTa v1, microsoft/deberta-base
    "roberta-base": ("RobertaConfig", {"num_labels": 2}),
    "roberta-large": ("RobertaConfig", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                        "intermediate_size": 4096, "num_labels": 2}),
    "llama-2-7b": ("LlamaConfig", {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000}),
    "llama-2-70b": ("LlamaConfig", {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                                    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000}),
    "llama-7b-gqa": ("LlamaConfig", {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                                     "num_key_value_heads": 8, "intermediate_size": 11008, "vocab_size": 32000}),
    "smollm2-135m": ("LlamaConfig", {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                                     "tie_word_embeddings": True}),
    "gpt2": ("GPT2Config", {}),
}
TASKS = {"seq-cls": "AutoModelForSequenceClassification", "causal-lm": "AutoModelForCausalLM", "base": "AutoModel"}


def load_config(model: str, gguf_file: str | None = None, presets: bool = True):
    """A transformers config (no weights) from a preset name (if ``presets``), a local directory (its
    config.json, or ``gguf_file`` in it), or a Hub id; one TenpeftError saying which ``model`` failed to be.
    Weights are loaded with the Hub's own config, so a loader of weights passes ``presets=False``."""
    import huggingface_hub

    if presets and model in PRESETS:
        return preset_config(model)
    path = os.path.expanduser(model)
    looks_local = os.path.exists(model) or os.path.isabs(model) or model.startswith((".", "~"))  # never hub ids
    if looks_local and gguf_file is None and not os.path.isfile(os.path.join(path, "config.json")):
        raise TenpeftError(f"{model!r} is not a directory holding config.json")
    transformers.logging.set_verbosity_error()
    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter when offline
    try:
        return transformers.AutoConfig.from_pretrained(path, gguf_file=gguf_file)
    except (OSError, ValueError) as err:
        where = "has an unreadable config" if os.path.isdir(path) else "could not be found locally or on the Hugging Face Hub"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        options = f"a preset ({', '.join(PRESETS)}) or " if presets else ""
        raise TenpeftError(f"model {model!r} {where} ({first}); pass {options}a local directory containing "
                           f"config.json") from None


def preset_config(name: str):
    """The transformers config of a preset."""
    if name not in PRESETS:
        raise TenpeftError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    cls, kwargs = PRESETS[name]
    return getattr(transformers, cls)(**kwargs)


def resolve_task(config, task: str = "auto") -> str:
    """``task``, or for ``auto`` the family's: ``causal-lm`` for decoders, ``seq-cls`` for encoders
    (``tenpeft.structure.is_decoder``)."""
    if task == "auto":
        return "causal-lm" if is_decoder(config) else "seq-cls"
    if task not in TASKS:
        raise TenpeftError(f"unknown task {task!r}; tasks: auto, {', '.join(TASKS)}")
    return task


def model_class(config, task: str = "auto"):
    """The transformers Auto class that builds ``config``'s model for ``task`` (see ``resolve_task``)."""
    return getattr(transformers, TASKS[resolve_task(config, task)])


def build_model(config, task: str = "auto", device=None):
    """A random-init model for ``config``: a sequence classifier for encoders, a causal LM for
    decoders (``task`` overrides: seq-cls, causal-lm or base), on ``device`` (e.g. ``"meta"``: no
    weights). A classifier without ``num_labels`` gets 2. The one builder of the CLI, lab and tests."""
    task = resolve_task(config, task)
    if task == "seq-cls" and not getattr(config, "num_labels", None):
        config.num_labels = 2
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return model_class(config, task).from_config(config)
    except ValueError as err:
        raise TenpeftError(f"cannot build a {task} model for {config.model_type!r}: {err}") from None


def build_on_meta(config, task: str = "auto"):
    """``build_model`` on the meta device: parameter counts without weights."""
    return build_model(config, task, device="meta")
