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


def test_the_demo_trains_an_llm_recognizer_that_answers_in_words():
    """`make demo` trains an LLM recipe (issue 32, item 5): its config's final stage adapts an LLM with LoRA and
    writes text, which the served answer carries (`explanation.text`, printed by `serve --once`)."""
    import yaml

    from actionllm.components.lora import LoraRecognizer
    from actionllm.methods import get_recipe

    demo = re.search(r"^demo:.*?(?=^\S)", (ROOT / "Makefile").read_text(), flags=re.S | re.M).group(0)
    train = next(ln for ln in demo.splitlines() if "actionllm train" in ln)
    config = yaml.safe_load((ROOT / re.search(r"--config (\S+)", train).group(1)).read_text())
    recipe = get_recipe(config["recipe"])
    final = recipe.recognizer  # the final stage's model: what evaluation and serving load
    assert issubclass(final, LoraRecognizer) and final.writes_text, (config["recipe"], final)
    assert config["recipe_config"]["backbone"]["name_or_path"] != "tiny"  # a pretrained LLM, not a random one


def test_every_method_run_file_is_a_valid_train_config():
    """The run files in actionllm/methods/*/configs (each headed by the command that runs it) stay valid as the
    code changes, also those no test trains (e.g. ST-GCN's demo, a README command since the demo moved to SUGAR)."""
    import yaml

    from actionllm.methods import get_recipe
    from training.config import TrainConfig

    files = [p for p in sorted(ROOT.glob("actionllm/methods/*/configs/*.yaml")) if not p.name.startswith("tune-")]
    assert any(p.match("stgcn/configs/demo-gait.yaml") for p in files)
    for path in files:
        tc = TrainConfig.from_yaml(path, data="data/x", output="runs/x")
        get_recipe(tc.recipe).config(tc.recipe_config)  # the recipe's own config validates too
        assert (path.read_text().lstrip().startswith("#")), f"{path}: head the run file with its command"
        assert yaml.safe_load(path.read_text())["recipe"] == tc.recipe
