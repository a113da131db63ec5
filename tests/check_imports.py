"""House rule: `actionllm/` never imports ray; `training/` never imports services; `services/` never training.

Checked statically (every import statement, AST) so that a lazy import inside a function is caught too.
Run as a script (`make lint`) or through tests/unit/test_house_rules.py.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"actionllm": {"ray", "training", "services"}, "training": {"services"}, "services": {"training"}}
EXEMPT = {Path("actionllm/cli.py")}  # the CLI is the one place that reaches into training/ and services/


def imported_roots(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations() -> list[str]:
    out = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel in EXEMPT:
                banned_here = {"ray"}
            else:
                banned_here = banned
            for root, line in imported_roots(path):
                if root in banned_here:
                    out.append(f"{rel}:{line}: imports {root} ({package}/ must not)")
    return out


if __name__ == "__main__":
    problems = violations()
    print("\n".join(problems) or "house rules: ok")
    sys.exit(1 if problems else 0)
