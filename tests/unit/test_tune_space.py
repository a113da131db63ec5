"""Search spaces: registry defaults, YAML overrides, parameter mapping and the refusals before any trial."""

import pytest

from training.config import TrainConfig
from training.search_space import apply_params, load_space_file, normalise_space, validate_space

BASE = TrainConfig(data="d", output="o", recipe_config={"backbone": {"name_or_path": "tiny"}}).model_dump(mode="json")
FACTS = {"layout": "kinect20", "dims": 3, "max_frames": 100}


def test_params_map_to_train_and_recipe_fields():
    tc = TrainConfig.model_validate(apply_params(BASE, "joints-llm", {"window": 24, "stride_fraction": 0.5,
                                                                      "rank": 16, "lr": 3e-4, "lora.dropout": 0.1}))
    rc = tc.recipe_config
    assert rc["bridge"] == {"window": 24, "stride": 12} and tc.lr == 3e-4
    assert rc["lora"] == {"r": 16, "alpha": 32, "dropout": 0.1}  # alpha = 2 x rank unless given
    no_stride = apply_params(BASE, "joints-llm", {"window": 18, "stride_fraction": None})
    assert no_stride["recipe_config"]["bridge"]["stride"] is None
    explicit = apply_params(BASE, "joints-llm", {"rank": 4, "alpha": 4})
    assert explicit["recipe_config"]["lora"] == {"r": 4, "alpha": 4}


def test_registry_space_is_valid_on_msr_like_data():
    from actionllm.methods import get_recipe

    assert validate_space("joints-llm", BASE, get_recipe("joints-llm").search_space, FACTS) == []
    stgcn = TrainConfig(recipe="stgcn", data="d", output="o").model_dump(mode="json")
    assert validate_space("stgcn", stgcn, get_recipe("stgcn").search_space, FACTS) == []


def test_invalid_combinations_are_refused_with_the_reason():
    reasons = validate_space("joints-llm", BASE, {"window": {"choice": [12, 18]}, "stride": {"choice": [6, 15]}},
                             FACTS)
    assert reasons == ["window=12, stride=15: stride 15 > window 12 (frames between windows would never be seen)"]
    long = validate_space("joints-llm", BASE, {"window": {"choice": [18, 150]}}, FACTS)
    assert any("window 150 is longer than the longest sequence (100 frames)" in r for r in long)
    tokens = validate_space("joints-llm", BASE, {"window": {"choice": [48]}, "max_length": 20000}, FACTS)
    assert len(tokens) == 1 and "over the backbone's context of 8192" in tokens[0]
    bad_value = validate_space("joints-llm", BASE, {"rank": {"choice": [0, 8]}}, FACTS)
    assert len(bad_value) == 1 and bad_value[0].startswith("rank=0: invalid config")
    unknown = validate_space("joints-llm", BASE, {"frames": {"choice": [32]}}, FACTS)
    assert "not a TrainConfig field, a knob of recipe 'joints-llm'" in unknown[0]
    with pytest.raises(ValueError, match="loguniform needs low > 0"):
        validate_space("joints-llm", BASE, {"lr": {"loguniform": [0, 1e-3]}}, FACTS)
    with pytest.raises(ValueError, match="must be one of"):
        validate_space("joints-llm", BASE, {"lr": {"normal": [0, 1]}}, FACTS)


def test_space_file_forms(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("inherit: false\nspace:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\ntrain:\n  epochs: 2\n")
    assert load_space_file(f) == ({"lr": {"loguniform": [1e-4, 1e-2]}}, {"epochs": 2}, False)
    f.write_text("window: {choice: [12, 18]}\n")
    assert load_space_file(f) == ({"window": {"choice": [12, 18]}}, {}, True)
    f.write_text("space: {}\nsapce: {}\n")
    with pytest.raises(ValueError, match="unknown top-level keys"):
        load_space_file(f)
    f.write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot read the search space"):
        load_space_file(f)


def test_search_algorithms():
    from ray.tune.search.optuna import OptunaSearch

    from training.tune import search_algorithm

    assert search_algorithm("random", {}, "val_accuracy", "max", 0) is None
    algo = search_algorithm("optuna", {"lr": {"loguniform": [1e-4, 1e-2]}}, "val_accuracy", "max", 0)
    assert isinstance(algo, OptunaSearch)
    with pytest.raises(ValueError, match="does not take grid entries"):
        search_algorithm("optuna", {"lr": {"grid": [1e-4, 1e-3]}}, "val_accuracy", "max", 0)
    with pytest.raises(ValueError, match="unknown --search 'bayes'"):
        search_algorithm("bayes", {}, "val_accuracy", "max", 0)


def test_plain_list_is_a_choice_and_malformed_entries_are_refused_once(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text("window: [12, 18]\nrank: [4, 8]\nlr: 3.0e-4\n")  # how sweep files are often written
    space, train, inherit = load_space_file(f)
    assert normalise_space(space) == {"window": {"choice": [12, 18]}, "rank": {"choice": [4, 8]}, "lr": 3e-4}
    assert validate_space("joints-llm", BASE, space, FACTS) == []  # 4 valid combinations, no pydantic errors
    nested = normalise_space({"lora.target_modules": [["q_proj", "v_proj"], ["q_proj"]]})  # list values: a list of lists
    assert nested == {"lora.target_modules": {"choice": [["q_proj", "v_proj"], ["q_proj"]]}}
    with pytest.raises(ValueError) as err:
        validate_space("joints-llm", BASE, {"window": [], "rank": {"choices": [4, 8]}, "lr": {"uniform": [1]},
                                            "stride": [6]}, FACTS)
    msg = str(err.value)
    assert msg.startswith("the search space is malformed:") and msg.count("space key") == 3
    assert "'window': choice needs a non-empty list" in msg and "'rank'" in msg and "'lr'" in msg
    assert "accepted forms: {choice: [a, b]}, [a, b] (= choice)" in msg
