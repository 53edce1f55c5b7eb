"""tenpeft: tensor-decomposition parameter-efficient fine-tuning of Hugging Face models.

One :class:`~tenpeft.formats.Factorization` abstraction (CP, Tucker, TT, dense, frozen random
factors) feeds one injection engine; every method is a preset over the two.
"""
from .version import __version__
from .adapters import active_adapter, adapter_names, add_adapter, delete_adapter, set_adapter
from .engine import inject
from .errors import TenpeftError
from .export import LoraExport, to_lora
from .formats import FORMATS, Budget, Factorization, get_format, register_format
from .io import from_pretrained, load_adapter, push_to_hub, save_adapter
from .lifecycle import disable_adapter, merge, merge_and_unload, unload, unmerge
from .methods import METHODS, Method, MethodConfig, get_method, register_method
from .report import ParameterReport, parameter_report
from .shapes import factorize, matrix_shape
from .state import TenpeftState
from .structure import FAMILIES, FamilySpec, ModelStructure, discover, register_family
from .trainer import adapter_checkpoints

__all__ = ["active_adapter", "adapter_checkpoints", "adapter_names", "add_adapter", "Budget", "delete_adapter", "set_adapter", "FAMILIES", "FORMATS", "FamilySpec", "Factorization", "LoraExport", "METHODS", "Method",
           "MethodConfig", "ModelStructure", "ParameterReport", "TenpeftError", "TenpeftState", "__version__",
           "disable_adapter", "discover", "factorize", "from_pretrained", "get_format", "get_method", "inject", "load_adapter",
           "matrix_shape", "merge", "merge_and_unload", "parameter_report", "push_to_hub", "register_family", "register_format",
           "register_method", "save_adapter", "to_lora", "unload", "unmerge"]
