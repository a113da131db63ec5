"""Every third-party module the shipped code imports is a declared runtime dependency.

`make demo` installs `pip install -e .` only (no extras), so a module that the code under actionllm/,
training/, services/ (and cli/, cluster/ where they are Python packages) imports at run time must come from a
distribution named in pyproject.toml's [project].dependencies. httpx, imported by `actionllm serve --once`
while it was only in the `dev` extra, is what this test exists for.

The rules, checked statically (every import statement in the AST, including imports inside functions, so
that a lazy import is caught too):

* skipped: relative imports, the standard library (`sys.stdlib_module_names`), `__future__`, and the
  project's own packages (actionllm, training, services, cli, cluster);
* each remaining top-level module is mapped to its distributions with
  `importlib.metadata.packages_distributions()` (names normalised per PEP 503);
* an unguarded import must be provided by a distribution declared directly in [project].dependencies.
  Being pulled in transitively by a declared dependency (fastapi by ray[serve], safetensors by
  transformers) is not enough: we import it, so we declare it. `TRANSITIVE_ALLOWED` is the escape hatch for
  a module that cannot be declared; keep it empty;
* an *optional* import, i.e. inside a `try` whose handler catches ImportError / ModuleNotFoundError, or of a
  module whose presence the same file checks with `importlib.util.find_spec("name")`, may also come from a
  distribution named in an optional extra ([project.optional-dependencies], e.g. optuna in `tune`,
  flash-attn in `gpu`), and need not be installed here;
* dev-only packages (pytest, hypothesis, selenium, ...) may be imported only by tests/ and bench/, which
  this test does not scan.

It also checks that constraints.txt (the Makefile's `pip install -c constraints.txt`) pins every runtime
dependency to a version its specifier accepts.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
OWN = {"actionllm", "training", "services", "cli", "cluster"}
SCANNED = ("actionllm", "training", "services", "cli", "cluster")  # cli/ and cluster/: when they hold Python
TRANSITIVE_ALLOWED: dict[str, str] = {}  # module -> why it cannot be a declared dependency
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def normalise(name: str) -> str:
    """PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["project"]["dependencies"]]


def extra_distributions() -> set[str]:
    extras = pyproject()["project"].get("optional-dependencies", {})
    return {normalise(Requirement(r).name) for reqs in extras.values() for r in reqs}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in IMPORT_ERRORS for t in types)


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, optional) for every absolute import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    probed = {node.args[0].value.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "find_spec"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}
    out = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            inner = guarded or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            root = name.split(".")[0]
            out.append((root, node.lineno, guarded or root in probed))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return out


def third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """{module: [(file:line, optional), ...]} over the shipped packages."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for package in SCANNED:
        folder = ROOT / package
        if not folder.is_dir():
            continue  # cli/ and cluster/ become Python packages in the restructure
        for path in sorted(folder.rglob("*.py")):
            for root, line, optional in imports_of(path):
                if root in OWN or root == "__future__" or root in sys.stdlib_module_names:
                    continue
                found.setdefault(root, []).append((f"{path.relative_to(ROOT)}:{line}", optional))
    return found


def test_scanner_sees_lazy_and_guarded_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import numpy\n"
                   "def f():\n    import httpx\n"
                   "try:\n    import optuna\nexcept (ImportError, OSError):\n    optuna = None\n"
                   "try:\n    import yaml\nexcept KeyError:\n    pass\n"
                   "import importlib.util\nHAS = importlib.util.find_spec('flash_attn')\n"
                   "def g():\n    import flash_attn.ops\n"
                   "from . import sibling\n")
    assert imports_of(src) == [("numpy", 1, False), ("httpx", 3, False), ("optuna", 5, True), ("yaml", 9, False),
                               ("importlib", 12, False), ("flash_attn", 15, True)]


def test_runtime_imports_are_declared_dependencies():
    declared = {normalise(r.name) for r in runtime_requirements()}
    extras = extra_distributions()
    providers = {m: {normalise(d) for d in dists} for m, dists in md.packages_distributions().items()}
    problems = []
    for module, uses in sorted(third_party_imports().items()):
        if module in TRANSITIVE_ALLOWED:
            continue
        dists = providers.get(module, set())
        optional = all(opt for _, opt in uses)
        where = ", ".join(w for w, _ in uses[:3]) + (f" (+{len(uses) - 3} more)" if len(uses) > 3 else "")
        if dists & declared:
            continue
        if optional and (dists & extras or normalise(module) in extras):
            continue  # optional import of an extra's module (installed or not)
        if not dists:
            problems.append(f"{module}: imported by {where}, but no installed distribution provides it")
        else:
            problems.append(f"{module} (distribution {'/'.join(sorted(dists))}): imported "
                            f"{'only under an ImportError guard ' if optional else ''}by {where}, but not in "
                            f"[project].dependencies{'' if not optional else ' or an extra'}")
    assert not problems, "undeclared runtime imports (a plain `pip install -e .` lacks them):\n  " + "\n  ".join(problems)


def test_constraints_pin_every_runtime_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = Version(version.strip())
    problems = []
    for req in runtime_requirements():
        pin = pins.get(normalise(req.name))
        if pin is None:
            problems.append(f"{req}: not pinned in constraints.txt")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req}: constraints.txt pins {pin}, outside the specifier")
    assert not problems, "\n".join(problems)
