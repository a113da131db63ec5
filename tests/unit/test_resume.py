"""training/resume.py: what a run folder holds when the same `train` command runs again (no Ray started)."""

import json

import pytest

from training.resume import FREE, clear_run, config_changes, inspect_run, latest_checkpoint

CONFIG = {"recipe": "stgcn", "data": "/data/shards", "output": "/runs/a", "epochs": 3, "lr": 0.1, "workers": 2,
          "recipe_config": {"clip": {"frames": 16}, "preset": "small"}}


def write_run(out, config=CONFIG, checkpoint_epoch=None, finished=False):
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config))
    (out / "ray" / "train").mkdir(parents=True)
    (out / "train.log").write_text("earlier log\n")
    if checkpoint_epoch is not None:
        name = f"checkpoint_e{checkpoint_epoch}"
        (out / "ray" / "train" / name).mkdir()
        (out / "ray" / "train" / "checkpoint_manager_snapshot.json").write_text(json.dumps(
            {"latest_checkpoint_result": {"checkpoint_dir_name": name,
                                          "metrics": {"epoch": checkpoint_epoch, "step": 7 * (checkpoint_epoch + 1)}}}))
    if finished:
        (out / "recognizer").mkdir()
        (out / "recognizer" / "config.json").write_text("{}")
        (out / "summary.json").write_text(json.dumps({"recognizer": str(out / "recognizer"), "metrics": {"epoch": 2}}))


def test_an_empty_folder_is_a_fresh_run(tmp_path):
    assert inspect_run(tmp_path, CONFIG).state == "none"


def test_a_registered_checkpoint_is_resumed_and_named(tmp_path):
    write_run(tmp_path, checkpoint_epoch=1)
    prev = inspect_run(tmp_path, CONFIG)
    assert (prev.state, prev.epoch, prev.step, prev.checkpoint) == ("resume", 1, 14, "checkpoint_e1")
    assert prev.describe(tmp_path, 3) == (f"resuming {tmp_path} from its last checkpoint: epoch 2 of 3 done, step 14 "
                                          "(checkpoint_e1); --restart starts over")


def test_a_run_killed_before_its_first_checkpoint_says_it_starts_again(tmp_path):
    write_run(tmp_path)
    prev = inspect_run(tmp_path, CONFIG)
    assert prev.state == "no-checkpoint" and "starting again from epoch 0" in prev.describe(tmp_path, 3)


def test_a_snapshot_naming_a_missing_checkpoint_is_not_trusted(tmp_path):
    write_run(tmp_path, checkpoint_epoch=0)
    (tmp_path / "ray" / "train" / "checkpoint_e0").rmdir()
    assert latest_checkpoint(tmp_path) is None and inspect_run(tmp_path, CONFIG).state == "no-checkpoint"


def test_a_finished_run_is_returned_not_trained_again(tmp_path):
    write_run(tmp_path, checkpoint_epoch=2, finished=True)
    prev = inspect_run(tmp_path, CONFIG)
    assert prev.state == "done" and prev.summary["metrics"]["epoch"] == 2


def test_other_settings_are_refused_naming_each_and_free_ones_are_not(tmp_path):
    write_run(tmp_path, checkpoint_epoch=0)
    changed = {**CONFIG, "lr": 0.05, "recipe_config": {"clip": {"frames": 24}, "preset": "small"}}
    with pytest.raises(ValueError, match=r"other settings \(lr 0.1 -> 0.05; recipe_config.clip.frames 16 -> 24\)"):
        inspect_run(tmp_path, changed)
    moved = {**CONFIG, "workers": 4, "max_failures": 3, "output": "/elsewhere"}  # where it runs, not what it learns
    assert {"workers", "max_failures", "output"} <= FREE and inspect_run(tmp_path, moved).state == "resume"
    assert config_changes({"epochs": 3}, {"epochs": 3, "seed": 1}) == ["seed None -> 1"]


def test_restart_removes_the_run_and_earlier_stages_keeps_the_log(tmp_path):
    write_run(tmp_path, checkpoint_epoch=2, finished=True)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    write_run(tmp_path / "vqvae", checkpoint_epoch=1, finished=True)
    (tmp_path / "other.txt").write_text("the user's")
    removed = clear_run(tmp_path, ["vqvae"])
    assert str(tmp_path / "ray") in removed and str(tmp_path / "vqvae" / "recognizer") in removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "train.log", "vqvae"]
    assert sorted(p.name for p in (tmp_path / "vqvae").iterdir()) == ["train.log"]
    assert inspect_run(tmp_path, CONFIG).state == "none"


def test_a_restarted_trial_reports_the_epochs_its_folder_keeps(tmp_path):
    """tune --resume: a trial Tune restarts reports the epochs it will not train again (up to its last registered
    checkpoint; all of them when it finished), each once, before its training resumes."""
    from training.tune import epoch_values, kept_epochs

    write_run(tmp_path, checkpoint_epoch=1)
    lines = [{"kind": "epoch", "epoch": 0, "val_loss": 3.0}, {"kind": "epoch", "epoch": 1, "val_loss": 2.8},
             {"kind": "epoch", "epoch": 2, "val_loss": 9.0},  # after the last checkpoint: trained again
             {"kind": "epoch", "epoch": 1, "val_loss": 2.5}]  # epoch 1 trained twice: the last one counts
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    kept = kept_epochs(tmp_path)
    assert [(m["epoch"], m["epochs_done"], m["val_loss"]) for m in kept] == [(0, 1, 3.0), (1, 2, 2.5)]
    assert all("kind" not in m for m in kept)
    assert sorted(epoch_values(tmp_path, "val_loss")) == [2.5, 3.0, 9.0]
    (tmp_path / "summary.json").write_text("{}")
    assert [m["epoch"] for m in kept_epochs(tmp_path)] == [0, 1, 2]
    assert kept_epochs(tmp_path / "nothing") == []


def test_ctrl_c_after_a_stage_is_not_left_to_the_finished_runs_handler():
    """Ray Train's fit installs its own SIGINT handler and leaves it: fit_keeping_sigint puts the one from before
    back, so a Ctrl-C between two stages interrupts the command instead of reaching a finished run."""
    import signal

    from training.train import fit_keeping_sigint

    class Trainer:  # stands in for TorchTrainer: its fit installs a handler that swallows Ctrl-C
        def fit(self):
            signal.signal(signal.SIGINT, lambda *_: None)
            return "result"

    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # what a command starts with (the suite
    original = signal.signal(signal.SIGINT, signal.default_int_handler)  # may leave it otherwise in this process)
    try:
        assert fit_keeping_sigint(Trainer()) == "result"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, original)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def test_ctrl_c_that_ray_trains_abort_lets_through_still_stops_the_command():
    """Ray's handler asks the controller to abort, a no-op before the run starts: the run then ends normally.
    The Ctrl-C is noted all the same, and fit_keeping_sigint raises KeyboardInterrupt when fit returns."""
    import signal

    from training.train import fit_keeping_sigint

    class Trainer:  # TorchTrainer's shape: fit registers the handler through _register_sigint_handler
        def _register_sigint_handler(self, controller):
            signal.signal(signal.SIGINT, lambda *_: None)  # an abort that does nothing

        def fit(self):
            self._register_sigint_handler(None)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while the run starts
            return "result"

    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_keeping_sigint(Trainer())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, original)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
