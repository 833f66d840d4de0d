"""Runs that die: killed mid-training, or diverged to a NaN loss."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO
from tests.conftest import bindings
from tests.conftest import read_weights
from tests.conftest import run_tool
from vse_tf.training import callbacks


def _outputs(model_dir):
    """Relative paths of a run's files, event files by folder only."""
    paths = set()
    for root, _, files in os.walk(model_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), model_dir)
            paths.add(os.path.dirname(rel) + "/<events>"
                      if name.startswith("events.out") else rel)
    return paths


def _read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights(tfds_dir,
                                                          tmp_path):
    # Killed with SIGKILL during epoch 2 of 3, rerun with the same command:
    # with deterministic ops it ends where a run never killed ends, to the
    # bit, because it resumes the data at its epoch as well as the weights.
    epochs, steps = 3, 20
    args = ["--gin_file=gin/demo.gin",
            *bindings([f"train.epochs = {epochs}",
                       f"train.steps_per_epoch = {steps}",
                       "train.deterministic = True",
                       "train.projector_images = 4"]),
            f"--data_dir={tfds_dir}"]
    killed_dir = tmp_path / "killed"
    backup = killed_dir / "checkpoints" / "backup" / "training_metadata.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "vse_tf.train", *args,
         f"--model_dir={killed_dir}"], cwd=REPO,
        env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not backup.exists():
        assert process.poll() is None, "the run ended before its first backup"
        assert time.time() < deadline, "no backup within 5 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _read_json(backup)["epoch"]
    assert killed_at < epochs and not (killed_dir / "metrics.json").exists()
    # As if killed after history.csv took the next epoch's row but before
    # the backup did: the resumed run must drop that row.
    history = killed_dir / "history.csv"
    with open(history, "a") as f:
        f.write(f"{killed_at + 1}" + ",1.0" * (len(
            history.read_text().splitlines()[0].split(",")) - 1) + "\n")

    resumed = run_tool("train", *args, f"--model_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Resumed where the backup left off, not from scratch.
    assert f"Resuming from {killed_dir}/checkpoints/backup: epoch " in (
        resumed.stdout)
    assert "Epoch 1/" not in resumed.stdout
    final = _read_json(backup)
    assert final["epoch"] == epochs and final["step"] == epochs * steps

    whole_dir = tmp_path / "whole"
    whole = run_tool("train", *args, f"--model_dir={whole_dir}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert _outputs(killed_dir) == _outputs(whole_dir)
    latest = os.path.join("checkpoints", "backup", "latest.weights.h5")
    expected = read_weights(whole_dir / latest)
    found = read_weights(killed_dir / latest)
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value, err_msg=name)
    assert _read_json(killed_dir / "metrics.json") == _read_json(
        whole_dir / "metrics.json")
    # The history keeps the epochs before the kill and adds the rest once.
    assert callbacks.read_history(killed_dir / "history.csv") == (
        callbacks.read_history(whole_dir / "history.csv"))
    assert len(callbacks.read_history(whole_dir / "history.csv")) == epochs


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_best_checkpoint(tfds_dir,
                                                              tmp_path):
    # A sane first epoch, then a learning rate that blows the weights up.
    steps = 3
    result = run_tool(
        "train", "--gin_file=gin/demo.gin",
        *bindings(["train.epochs = 3", f"train.steps_per_epoch = {steps}",
                   "make_optimizer.learning_rate = "
                   "@keras.optimizers.schedules.PiecewiseConstantDecay()",
                   "keras.optimizers.schedules.PiecewiseConstantDecay."
                   f"boundaries = [{steps}]",
                   "keras.optimizers.schedules.PiecewiseConstantDecay."
                   "values = [1e-3, 1e38]"]),
        f"--data_dir={tfds_dir}", f"--model_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert "Training stopped at step" in message
    assert "the loss is nan" in message or "the loss is inf" in message
    assert "Traceback" not in result.stderr
    best = _read_json(tmp_path / "checkpoints" / "best.json")
    assert best["epoch"] == 1
    assert _read_json(tmp_path / "checkpoints" / "backup" /
                      "training_metadata.json")["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()
