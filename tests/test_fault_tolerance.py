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
            paths.add(
                os.path.dirname(rel) + "/<events>"
                if name.startswith("events.out")
                else rel
            )
    return paths


def _read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights(tfds_dir, tmp_path):
    # Killed with SIGKILL during epoch 2 of 3, rerun with the same command:
    # with deterministic ops it ends where a run never killed ends, to the
    # bit, because it resumes the data at its epoch as well as the weights.
    epochs, steps = 3, 20
    args = [
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                f"train.epochs = {epochs}",
                f"train.steps_per_epoch = {steps}",
                "train.deterministic = True",
                "train.projector_images = 4",
            ]
        ),
        f"--data_dir={tfds_dir}",
    ]
    killed_dir = tmp_path / "killed"
    backup = killed_dir / "checkpoints" / "backup" / "training_metadata.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vse_tf.train",
            *args,
            f"--model_dir={killed_dir}",
        ],
        cwd=REPO,
        env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        f.write(
            f"{killed_at + 1}"
            + ",1.0" * (len(history.read_text().splitlines()[0].split(",")) - 1)
            + "\n"
        )

    resumed = run_tool("train", *args, f"--model_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Resumed where the backup left off, not from scratch.
    assert f"Resuming from {killed_dir}/checkpoints/backup: epoch " in (
        resumed.stdout
    )
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
        whole_dir / "metrics.json"
    )
    # The history keeps the epochs before the kill and adds the rest once.
    assert callbacks.read_history(killed_dir / "history.csv") == (
        callbacks.read_history(whole_dir / "history.csv")
    )
    assert len(callbacks.read_history(whole_dir / "history.csv")) == epochs


@pytest.mark.slow
@pytest.mark.parametrize(
    "blown_up_at, stopped",
    [
        # Step 5 breaks the weights, step 6's loss is NaN.
        (5, "Training stopped at step 6 (epoch 2, batch 3): the loss is"),
        # Step 6, the epoch's last, breaks them with every loss finite.
        (
            6,
            "Training stopped at the end of epoch 2 (step 6), whose last "
            "update broke the model",
        ),
    ],
    ids=["mid-epoch", "last-step"],
)
def test_divergence_stops_the_run_and_keeps_the_best_checkpoint(
    blown_up_at, stopped, tfds_dir, tmp_path
):
    # A sane first epoch, then a learning rate that blows the weights up
    # (step k updates with the rate of iteration k - 1).
    steps = 3
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "train.epochs = 3",
                f"train.steps_per_epoch = {steps}",
                "make_optimizer.learning_rate = "
                "@keras.optimizers.schedules.PiecewiseConstantDecay()",
                "keras.optimizers.schedules.PiecewiseConstantDecay."
                f"boundaries = [{blown_up_at - 2}]",
                "keras.optimizers.schedules.PiecewiseConstantDecay."
                "values = [1e-3, 1e38]",
            ]
        ),
        f"--data_dir={tfds_dir}",
        f"--model_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    assert stopped in message
    assert "Traceback" not in result.stderr
    best = _read_json(tmp_path / "checkpoints" / "best.json")
    assert best["epoch"] == 1
    assert (
        _read_json(
            tmp_path / "checkpoints" / "backup" / "training_metadata.json"
        )["epoch"]
        == 1
    )
    assert not (tmp_path / "metrics.json").exists()


def _sigint_as_in_a_terminal():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent, status, after_backup, said",
    [
        (
            signal.SIGINT,
            130,
            True,
            "Stopped by Ctrl-C (SIGINT). The backup in {backup} holds epoch 1: "
            "the same command resumes from epoch 2.",
        ),
        (
            signal.SIGTERM,
            143,
            False,
            "Stopped by SIGTERM. No epoch was backed up yet: the same command "
            "trains from the start.",
        ),
    ],
    ids=["ctrl-c-in-epoch-2", "sigterm-in-epoch-1"],
)
def test_a_stopped_run_says_how_to_resume(
    sent, status, after_backup, said, tfds_dir, tmp_path
):
    args = [
        "--gin_file=gin/demo.gin",
        *bindings(["train.epochs = 3", "train.steps_per_epoch = 400"]),
        f"--data_dir={tfds_dir}",
        f"--model_dir={tmp_path}",
    ]
    backup = tmp_path / "checkpoints" / "backup"
    process = subprocess.Popen(
        [sys.executable, "-m", "vse_tf.train", *args],
        cwd=REPO,
        env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test worker may ignore SIGINT (some library
        # before sets it so), and an ignored SIGINT is inherited.
        preexec_fn=_sigint_as_in_a_terminal,
    )
    read = []
    for line in process.stdout:  # Keras announces each epoch
        read.append(line)
        if line.startswith("Epoch 2/" if after_backup else "Epoch 1/"):
            break
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, (
        "".join(read) + "--- after the signal:\n" + stdout + stderr[-3000:]
    )
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == said.format(backup=backup)
    assert (backup / "training_metadata.json").exists() == after_backup
    # Nothing half-written: no metrics, no temporary file anywhere.
    assert not (tmp_path / "metrics.json").exists()
    assert not [
        name
        for _, _, names in os.walk(tmp_path)
        for name in names
        if name.startswith(".tmp-")
    ]
    if not after_backup:
        rerun = run_tool(
            "train",
            *args[:-1],
            f"--model_dir={tmp_path}",
            "--gin_bindings=train.steps_per_epoch = 2",
            "--gin_bindings=train.epochs = 1",
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert (
            f"{tmp_path} holds no backup yet (the first is written when "
            "an epoch ends): training starts from epoch 1."
        ) in (" ".join(rerun.stdout.split()))


def test_signals_wait_for_the_end_of_a_step():
    # Raised where it lands, a signal can hit TensorFlow's C++ mid-way (a
    # tf.data iterator being made) and abort the process: inside fit, it
    # waits for the step's end and then reaches the handler it was for.
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with callbacks.DeferSignals() as deferred:
            signal.raise_signal(signal.SIGTERM)  # mid-step: only noted
            assert seen == [] and deferred.received == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                deferred.on_train_batch_end(0)  # the step ends
            assert seen == [signal.SIGTERM]
            # Delivered once; the handlers are the program's own again.
            assert signal.getsignal(signal.SIGTERM) is handler
            deferred.on_train_batch_end(1)
        assert seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):  # a signal at the end of fit
            with callbacks.DeferSignals():
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)


def test_the_best_checkpoint_and_its_record_are_one_unit(tmp_path, monkeypatch):
    # A kill after the new best weights are in place and before best.json
    # is written leaves the old best.json: the record read back is still
    # the weights' own, so a resumed run compares with the right rsum.
    import keras

    from vse_tf import io_utils
    from vse_tf.training import run_dir

    run = run_dir.RunDir(str(tmp_path))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    callbacks.save_best(model, run, {"epoch": 1, "val_rsum": 250.0})
    model.layers[1].kernel.assign(np.ones((3, 2)))

    def killed(path, value):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_utils, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        callbacks.save_best(model, run, {"epoch": 2, "val_rsum": 300.0})
    monkeypatch.undo()
    assert _read_json(run.best_state)["epoch"] == 1  # stale, as after a kill
    assert callbacks.best_record(run) == {"epoch": 2, "val_rsum": 300.0}
    assert callbacks.RetrievalValidation(None, run).best_rsum == 300.0
    assert "epoch 2 in" in str(callbacks.diverged("here", run))
    # The record does not stand in Keras's way of loading the weights.
    model.layers[1].kernel.assign(np.zeros((3, 2)))
    model.load_weights(run.best_weights)
    assert np.array_equal(model.layers[1].kernel.numpy(), np.ones((3, 2)))


def test_a_best_checkpoint_without_its_record_inside_reads_best_json(tmp_path):
    from vse_tf.training import run_dir

    run = run_dir.RunDir(str(tmp_path))
    os.makedirs(run.checkpoints)
    import keras

    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save_weights(
        run.best_weights
    )
    with open(run.best_state, "w") as f:
        json.dump({"epoch": 4, "val_rsum": 123.0}, f)
    assert callbacks.best_record(run) == {"epoch": 4, "val_rsum": 123.0}
    with open(run.best_weights, "wb") as f:  # damaged: best.json still reads
        f.write(b"not hdf5")
    assert callbacks.best_record(run) == {"epoch": 4, "val_rsum": 123.0}
    assert callbacks.best_record(run_dir.RunDir(str(tmp_path / "none"))) is None
