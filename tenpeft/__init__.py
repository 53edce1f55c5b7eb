"""tenpeft: tensor-decomposition parameter-efficient fine-tuning of Hugging Face models.

One :class:`~tenpeft.formats.Factorization` abstraction (CP, Tucker, TT, dense, frozen random
factors) feeds one injection engine; every method is a preset over the two.
"""
from .engine import TenpeftState, inject
from .errors import TenpeftError
from .formats import FORMATS, Budget, Factorization, get_format, register_format
from .methods import METHODS, Method, MethodConfig, get_method, register_method
from .report import ParameterReport, parameter_report
from .shapes import factorize, matrix_shape
from .structure import FAMILIES, FamilySpec, ModelStructure, discover, register_family

__version__ = "0.1.0"

__all__ = ["Budget", "FAMILIES", "FORMATS", "FamilySpec", "Factorization", "METHODS", "Method", "MethodConfig",
           "ModelStructure", "ParameterReport", "TenpeftError", "TenpeftState", "__version__", "discover",
           "factorize", "get_format", "get_method", "inject", "matrix_shape", "parameter_report",
           "register_family", "register_format", "register_method"]
