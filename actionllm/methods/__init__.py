"""The methods, one folder each (README, config, model, recipe, run files). Importing this package registers
every method's recipe; a method imports the contract, the registry and components/, never another method."""

from .joints_llm import recipe as _joints_llm  # noqa: F401
from .llm_ar import recipe as _llm_ar  # noqa: F401
from .stgcn import recipe as _stgcn  # noqa: F401
from ..registry import RECIPES, get_recipe, load_recognizer  # noqa: E402  (the catalogue, once registered)

__all__ = ["RECIPES", "get_recipe", "load_recognizer"]
