"""The methods, one folder each (README, config, model, recipe, run files). Importing this package registers
every method's recipe; a method imports the contract, the registry and components/, never another method."""

# the catalogue, filled by the imports below
from ..registry import RECIPES, folder_class, folder_facts, get_recipe, load_recognizer
from .ctrgcn import recipe as _ctrgcn  # noqa: F401  (registers ctrgcn)
from .joints_llm import recipe as _joints_llm  # noqa: F401  (registers joints-llm)
from .llm_ar import recipe as _llm_ar  # noqa: F401  (registers llm-ar)
from .lvlm_var import recipe as _lvlm_var  # noqa: F401  (registers lvlm-var)
from .stgcn import recipe as _stgcn  # noqa: F401  (registers stgcn)
from .sugar import recipe as _sugar  # noqa: F401  (registers sugar)

__all__ = ["RECIPES", "folder_class", "folder_facts", "get_recipe", "load_recognizer"]
