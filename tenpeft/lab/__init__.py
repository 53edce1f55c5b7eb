"""The lab: the study harness over the core (models, methods and PEFT baselines, GLUE tasks, the
accelerate loop, runs, records, claims and figures). It needs the ``studies`` extra
(``pip install "tenpeft[studies]"``), depends on the core, and the core never imports it."""
from importlib.util import find_spec

EXTRA = ("accelerate", "datasets", "matplotlib", "pandas", "peft", "seaborn", "sklearn", "tqdm")
_missing = [name for name in EXTRA if find_spec(name) is None]
if _missing:
    raise ImportError(f"tenpeft.lab needs {', '.join(_missing)}: pip install \"tenpeft[studies]\"")
