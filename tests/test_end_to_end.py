"""The command-line tools as a user runs them, on the tiny built-in data."""

import json
import os

import numpy as np
import pytest

from tests.conftest import bindings
from tests.conftest import evaluate_again
from tests.conftest import recalls_by_brute_force
from tests.conftest import run_tool
from vse_tf import evaluation
from vse_tf import gin_config
from vse_tf.training import callbacks
from vse_tf.training import precision


@pytest.mark.slow
def test_training_writes_every_output(trained_run):
    model_dir, result = trained_run
    for path in (
        "operative_config.gin",
        "run.json",
        "vocabulary.txt",
        "checkpoints/best.weights.h5",
        "checkpoints/best.json",
        "metrics.json",
        "export/image_tower/1/saved_model.pb",
        "export/text_tower/1/saved_model.pb",
        "projector/projector_config.pbtxt",
    ):
        assert os.path.exists(os.path.join(model_dir, path)), path
    assert os.listdir(os.path.join(model_dir, "checkpoints", "backup"))
    events = [
        f
        for _, _, files in os.walk(os.path.join(model_dir, "logs"))
        for f in files
        if f.startswith("events.out.tfevents")
    ]
    assert events
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics) == set(evaluation.METRIC_NAMES)
    # What later tools read without gin.
    with open(os.path.join(model_dir, "run.json")) as f:
        info = json.load(f)
    assert info["dataset"] == "shapes/tiny" and not info["cache_features"]
    assert info["versions"]["tensorflow"]
    # 'auto', the default, as this machine has it, said in the log.
    auto = precision.choose("auto")
    assert info["mixed_precision"] == auto.policy
    assert f"in {auto.policy} ({auto.reason})" in result.stdout
    # The summary table closes the run.
    assert "rsum" in result.stdout and "text->image" in result.stdout
    # Readable by a TensorBoard or TF Serving of another user: files and
    # folders renamed into place get the umask's permissions, not 0600.
    umask = os.umask(0o022)
    os.umask(umask)
    for path, mode in (
        ("metrics.json", 0o666),
        ("run.json", 0o666),
        ("operative_config.gin", 0o666),
        ("vocabulary.txt", 0o666),
        ("checkpoints/best.weights.h5", 0o666),
        ("projector", 0o777),
        ("projector/embeddings.tsv", 0o666),
    ):
        found = os.stat(os.path.join(model_dir, path)).st_mode & 0o777
        assert found == mode & ~umask, (path, oct(found))
    # A log, not a terminal: one plain line per epoch.
    assert "\x1b[" not in result.stdout and "\r" not in result.stdout
    assert result.stdout.count("epoch 2: val rsum") == 1
    # Where the results are, and what to run next.
    assert f"python -m vse_tf.evaluate --model_dir={model_dir}" in (
        result.stdout
    )
    # No temporary files left behind by the atomic writes.
    leftovers = [
        f
        for _, dirs, files in os.walk(model_dir)
        for f in dirs + files
        if f.startswith(".tmp-")
    ]
    assert not leftovers


@pytest.mark.slow
def test_test_metrics_are_those_of_the_best_checkpoint(trained_run, tfds_dir):
    model_dir, _ = trained_run
    gin_config.load_gin_for_run(model_dir)
    expected, i2t, t2i = recalls_by_brute_force(model_dir, tfds_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["i2t_medr"] == np.floor(np.median(i2t)) + 1
    assert metrics["t2i_meanr"] == pytest.approx(t2i.mean() + 1)


@pytest.mark.slow
def test_operative_config_repeats_the_run(trained_run):
    model_dir, _ = trained_run
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
        config = f.read()
    assert "train.steps_per_epoch = 3" in config
    assert "AllNegativesLoss.temperature = 0.1" in config
    assert "build_text_tower.units = 8" in config


@pytest.mark.slow
def test_history_has_a_row_an_epoch_as_the_log_says(trained_run):
    model_dir, result = trained_run
    rows = callbacks.read_history(os.path.join(model_dir, "history.csv"))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert (
            f"epoch {row['epoch']}: val rsum "
            f"{float(row['val_rsum']):.1f} " in result.stdout
        )
        assert float(row["loss"]) > 0
    # demo.gin's cosine spans the run, whatever its length: 2e-3 halfway
    # down after epoch 1 of 2, 0 at the end.
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3, rel=1e-5)
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_tensorboard_logs_hold_recall_and_learning_rate(trained_run):
    import tensorflow as tf

    model_dir, _ = trained_run
    tags = {}
    for root, _, files in os.walk(os.path.join(model_dir, "logs")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(
                os.path.join(root, name)
            ):
                tags.setdefault(os.path.basename(root), set()).update(
                    v.tag for v in event.summary.value
                )
    # Keras files val_* metrics under logs/validation without the prefix.
    assert {"epoch_loss", "epoch_learning_rate"} <= tags["train"]
    assert {"epoch_rsum", "epoch_i2t_r1", "epoch_t2i_r10"} <= tags["validation"]


@pytest.mark.slow
def test_evaluate_reproduces_the_test_metrics(trained_run, tfds_dir, tmp_path):
    model_dir, _ = trained_run
    result, again, trained = evaluate_again(
        model_dir, tfds_dir, tmp_path / "metrics.json"
    )
    assert again == pytest.approx(trained)
    assert "image->text" in result.stdout


@pytest.mark.slow
def test_unknown_binding_names_it_and_suggests(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        "--gin_bindings=train.epocs = 2",
        f"--model_dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "'epocs'" in result.stderr and "'epochs'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        "--gin_bindings=trian.epochs = 2",
        f"--model_dir={tmp_path}",
    )
    assert result.returncode == 2 and "'train'" in result.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_missing_gin_file_is_a_clear_error(tmp_path):
    result = run_tool(
        "train", "--gin_file=gin/nope.gin", f"--model_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "gin/nope.gin" in result.stderr and "Traceback" not in (
        result.stderr
    )


@pytest.mark.slow
def test_unwritable_model_dir_is_a_clear_error(tmp_path, tfds_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(),
        f"--model_dir={blocker}/run",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 2
    assert "Cannot write" in result.stderr and "Traceback" not in (
        result.stderr
    )


@pytest.mark.slow
def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path):
    result = run_tool(
        "evaluate", "--gin_file=gin/demo.gin", f"--model_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "No trained model" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)
