"""Adapters on the Hugging Face Hub, through ``huggingface_hub`` (PEFT's ``from_pretrained(base, "user/repo")``
and ``push_to_hub``).

A source that is not a local folder is a Hub repo id: only the adapter's two files are downloaded (into
the Hugging Face cache; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` read the cache alone), then
loaded with the same checks as a local folder (``tenpeft.io``). ``tenpeft.io.push_to_hub`` uploads the adapter
files with :func:`model_card`, which says what the folder is and how to load it.
"""
from __future__ import annotations

import os

from torch import nn

from .errors import TenpeftError
from .state import CONFIG_NAME, LEGACY_NAMES, WEIGHTS_NAME, base_identity, state_of
from .version import __version__

ADAPTER_FILES = [CONFIG_NAME, WEIGHTS_NAME, *LEGACY_NAMES]


def resolve(source: str, revision: str | None = None, **hub_options) -> str:
    """The local folder holding the adapter ``source``: a folder as it is, else the Hub repo ``source``
    (at ``revision``) fetched into the cache; ``hub_options`` go to ``huggingface_hub.snapshot_download``
    (``token``, ``cache_dir``, ``local_files_only``, ...). One TenpeftError if it cannot be had."""
    if os.path.isdir(source):
        return source
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(source, revision=revision, allow_patterns=ADAPTER_FILES, library_name="tenpeft",
                                   library_version=__version__, **hub_options)
    except HFValidationError:
        raise TenpeftError(f"{source!r} is neither a local folder nor a Hub repo id ('user/repo'); check the "
                           f"path") from None
    except (OSError, ValueError) as err:  # the hub's errors are OSErrors (HTTP, not found, not cached)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TenpeftError(f"cannot fetch adapter {source!r} from the Hub ({type(err).__name__}: {first}); check "
                           f"the repo id, revision and token, or give a local folder") from None
    if not any(os.path.isfile(os.path.join(folder, name)) for name in (CONFIG_NAME, LEGACY_NAMES[0])):
        raise TenpeftError(f"Hub repo {source!r} holds no {CONFIG_NAME}: not a tenpeft adapter (a PEFT adapter "
                           f"loads with peft.PeftModel.from_pretrained)")
    return folder


def model_card(model: nn.Module, repo_id: str) -> str:
    """A README.md for the Hub repo ``repo_id``: metadata (library, base model, tags) and how to load the adapter."""
    state, base = state_of(model), base_identity(model)
    name = base["name_or_path"]
    named = bool(name) and not os.path.isabs(name)  # a hub id, not a folder on the saving machine
    meta = ["---", "library_name: tenpeft", *([f"base_model: {name}"] if named else []),
            "tags:", "- tenpeft", f"- {state.method}", "---"]
    code = ["```python", "import tenpeft", f"from transformers import {base['class']}", "",
            f"base_model = {base['class']}.from_pretrained({name if named else '<the base model>'!r})",
            f"model = tenpeft.from_pretrained(base_model, {repo_id!r})", "```"]
    about = (f"A tenpeft `{state.method}` adapter (tenpeft {__version__}) for {base['class']} "
             f"({base['model_type']}). It is not a PEFT adapter: load it with tenpeft into the same base model.")
    return "\n".join(meta + ["", f"# {repo_id}", "", about, "", *code, ""])
