"""House rules on imports, checked statically (every import statement in the AST, lazy ones inside functions
included), with no exemption:

  - actionllm/ never imports ray, training, services, cli or cluster (the science runs without Ray);
  - actionllm/methods/X never imports another method (actionllm/methods/Y, nor the methods package itself);
  - actionllm/components/ never imports actionllm/methods/;
  - training/ never imports services/, services/ never imports training/;
  - no import circle between the project's files.

Run as a script (`make lint`) or through tests/unit/test_house_rules.py (which also plants violating files in a
scratch tree to show each rule is caught).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actionllm", "training", "services", "cli", "cluster")
FORBIDDEN_ROOTS = {"actionllm": {"ray", "training", "services", "cli", "cluster"}, "training": {"services"},
                   "services": {"training"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a file; relative imports resolved; `from P import n`
    yields P.n when that is a module of the tree, else P."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                is_module = any((root / Path(*sub.split("."))).with_suffix(s).exists() if s else
                                (root / Path(*sub.split(".")) / "__init__.py").exists() for s in (".py", ""))
                out.append((sub if is_module else mod, node.lineno))
    return out


def project_files(root: Path) -> list[Path]:
    return [p for pkg in PACKAGES if (root / pkg).is_dir() for p in sorted((root / pkg).rglob("*.py"))]


def method_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["actionllm", "methods"] else None


def rule_violations(module: str, target: str) -> list[str]:
    here, there = module.split("."), target.split(".")
    out = []
    banned = FORBIDDEN_ROOTS.get(here[0], set())
    if there[0] in banned:
        out.append(f"{here[0]}/ must not import {there[0]}")
    mine, theirs = method_of(module), method_of(target)
    if mine is not None and target.startswith("actionllm.methods") and theirs != mine:
        out.append(f"method {mine} must not import {target} (another method, or the methods package)")
    if module.startswith("actionllm.components") and target.startswith("actionllm.methods"):
        out.append("components/ must not import methods/")
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles (strongly connected components of more than one file, or a file importing itself)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path = ROOT) -> list[str]:
    out, graph = [], {}
    files = project_files(root)
    known = {module_name(p, root) for p in files}
    for path in files:
        module = module_name(path, root)
        graph[module] = set()
        for target, line in imports(path, root):
            for problem in rule_violations(module, target):
                out.append(f"{path.relative_to(root)}:{line}: imports {target} ({problem})")
            # an arrow to a project file (a package's __init__ counts as the package)
            if target in known and target != module:
                graph[module].add(target)
    # a package's __init__ that only hands names on is not a circle with its own submodules
    for comp in circles(graph):
        out.append("import circle: " + " -> ".join(comp))
    return out


if __name__ == "__main__":
    problems = violations()
    print("\n".join(problems) or "house rules: ok")
    sys.exit(1 if problems else 0)
