"""CI (`.ci/run`) runs the README's set-up commands, in the README's order."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_commands_in_order():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)  # "On a fresh machine ... two commands"
    readme_cmds = re.findall(r"^(make \w+)", first_block, flags=re.M)
    ci_cmds = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()
               if ln.strip() and not ln.lstrip().startswith("#") and ln.strip().startswith("make ")]
    assert readme_cmds == ["make demo", "make test"]
    assert ci_cmds == readme_cmds


def test_make_demo_fails_when_the_demo_does_not_learn():
    """The demo's evaluation is its own test (it replaced a test that ran the whole demo a second time): `make demo`
    exits non-zero when the recognizer's test top-1 is under 0.9 (chance 0.5)."""
    demo = re.search(r"^demo:.*?(?=^\S)", (ROOT / "Makefile").read_text(), flags=re.S | re.M).group(0)
    evaluate = next(ln for ln in demo.splitlines() if "actionllm evaluate" in ln)
    assert "--split test" in evaluate and "--fail-under 0.9" in evaluate
