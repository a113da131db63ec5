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
