"""Inputs that must end in one clear paragraph, never a traceback."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import bindings
from tests.conftest import run_tool
from vse_tf import errors
from vse_tf.models import text_towers
from vse_tf.training import distribute
from vse_tf.training import optimizers
from vse_tf.training import resume


def _fails_cleanly(result, *phrases):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())  # the paragraph is wrapped
    for phrase in phrases:
        assert phrase in text, result.stderr


# TF_CONFIG


@pytest.mark.parametrize("tf_config, phrase", [
    ('{"cluster": {"worker": ["127.0.0.1:1"]}', "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", '
     '"index": 0}}', "must name one of the cluster's task types"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
     '"index": 2}}', "must be one of 0..1"),
])
def test_bad_tf_config_is_explained(monkeypatch, tf_config, phrase):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(errors.UserError, match=phrase):
        distribute.cluster_config()


def test_good_tf_config_and_no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster_config() is None
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
              "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.cluster_config() == config


@pytest.mark.slow
def test_bad_tf_config_stops_the_trainer_before_training(tmp_path):
    result = run_tool("train", "--gin_file=gin/demo.gin", *bindings(),
                      f"--model_dir={tmp_path}",
                      env_extra={"TF_CONFIG": "{worker: 0}"})
    _fails_cleanly(result, "TF_CONFIG is not valid JSON")
    assert not os.listdir(tmp_path)


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = (task_type, task_id,
                                                       cluster)

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, *args):
        self.cluster_resolver = _Resolver(*args)


@pytest.mark.parametrize("task, cluster, chief", [
    (("worker", 0), {"worker": ["a:1", "b:2"]}, True),
    (("worker", 1), {"worker": ["a:1", "b:2"]}, False),
    (("chief", 0), {"chief": ["a:1"], "worker": ["b:2"]}, True),
    (("worker", 0), {"chief": ["a:1"], "worker": ["b:2"]}, False),
])
def test_exactly_one_task_is_the_chief(task, cluster, chief):
    assert distribute.is_chief(_Strategy(*task, cluster)) is chief


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(errors.UserError, match="auto, default, mirrored"):
        distribute.get_strategy("mirored")


# Batch sizes


@pytest.mark.slow
def test_batch_not_divisible_by_replicas(two_replicas):
    distribute.check_batch_size(16, two_replicas)
    with pytest.raises(errors.UserError, match="does not split over 2 replicas"
                       ".* e.g. 14"):
        distribute.check_batch_size(15, two_replicas)


@pytest.mark.slow
def test_batch_larger_than_the_dataset(tfds_dir, tmp_path):
    # shapes/tiny has 256 train images x 5 captions.
    result = run_tool("train", "--gin_file=gin/demo.gin",
                      *bindings(["train.batch_size = 4096"]),
                      f"--model_dir={tmp_path}", f"--data_dir={tfds_dir}")
    _fails_cleanly(result, "train.batch_size = 4096 is larger than the "
                   "train split", "1280 image-caption pairs")
    assert "configurable" not in result.stderr


# Captions


def test_long_and_empty_captions_are_counted():
    captions = tf.data.Dataset.from_tensor_slices([
        "a red circle", "", "one two three four five", "  ", "Big, red; ok."])
    # Start token + words: 4, 1, 6, 1, 4 tokens.
    assert text_towers.count_long_captions(captions, 4) == (1, 2, 5)
    assert text_towers.count_long_captions(captions, 6) == (0, 2, 5)


@pytest.mark.slow
def test_training_logs_how_many_captions_are_cut(trained_run, tfds_dir,
                                                 tmp_path):
    _, result = trained_run
    assert "are cut" not in result.stdout  # demo captions fit in 21 tokens
    result = run_tool(
        "train", "--gin_file=gin/demo.gin",
        *bindings(["build_text_tower.max_length = 5", "train.epochs = 1",
                   "train.steps_per_epoch = 1", "train.export = False",
                   "train.projector_images = 0"]),
        f"--model_dir={tmp_path}", f"--data_dir={tfds_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "are longer than 4 words and are cut there" in result.stdout


# A model dir from another configuration


OLD = """\
# Macros:
EMBEDDING_DIM = 8

# Parameters for build_image_tower:
build_image_tower.conv_layers = \\
    ((8, 4, 4),)
build_image_tower.embedding_dim = %EMBEDDING_DIM
build_text_tower.units = 8

# Parameters for train:
train.epochs = 2
"""


def test_differences_name_model_bindings_and_follow_macros():
    new = (OLD.replace("EMBEDDING_DIM = 8", "EMBEDDING_DIM = 16")
           .replace("train.epochs = 2", "train.epochs = 9")
           .replace("(8, 4, 4)", "(8, 4, 2)"))
    assert resume.differences(OLD, new) == [
        ("build_image_tower.conv_layers", "((8, 4, 4),)", "((8, 4, 2),)"),
        ("build_image_tower.embedding_dim", "8", "16"),
    ]
    assert resume.differences(OLD, OLD) == []


def test_every_tower_factory_defines_the_model():
    old = ("build_precomputed_tower.pooling = 'mean'\n"
           "make_optimizer.name = 'adam'\n")
    new = ("build_precomputed_tower.pooling = 'gpo'\n"
           "make_optimizer.name = 'sgd'\n")
    assert resume.differences(old, new) == [
        ("build_precomputed_tower.pooling", "'mean'", "'gpo'")]


@pytest.mark.slow
def test_resuming_with_another_model_names_the_bindings(trained_run,
                                                        tfds_dir, tmp_path):
    import shutil
    model_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], model_dir)
    before = sorted(os.listdir(model_dir / "checkpoints"))
    result = run_tool("train", "--gin_file=gin/demo.gin",
                      *bindings(["build_text_tower.units = 12"]),
                      f"--model_dir={model_dir}", f"--data_dir={tfds_dir}")
    _fails_cleanly(result, "cannot be resumed",
                   "build_text_tower.units was 8, now 12")
    assert sorted(os.listdir(model_dir / "checkpoints")) == before


# Learning-rate scaling


def test_learning_rate_scales_with_the_global_batch():
    def rate(**kwargs):
        optimizer = optimizers.make_optimizer(base_batch_size=128, **kwargs)
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    assert rate(learning_rate=1e-3, global_batch_size=512) == (
        pytest.approx(1e-3))
    assert rate(learning_rate=1e-3, global_batch_size=512,
                scale_learning_rate="linear") == pytest.approx(4e-3)
    assert rate(learning_rate=1e-3, global_batch_size=512,
                scale_learning_rate="sqrt") == pytest.approx(2e-3)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    scaled = optimizers.make_optimizer(
        learning_rate=schedule, scale_learning_rate="linear",
        base_batch_size=128, global_batch_size=256)._learning_rate
    for step in (0, 10, 25):
        assert float(scaled(step)) == pytest.approx(2 * float(schedule(step)))
    config = keras.optimizers.schedules.serialize(scaled)
    again = keras.optimizers.schedules.deserialize(config)
    assert float(again(25)) == pytest.approx(float(scaled(25)))
    with pytest.raises(errors.UserError, match="'linear' or 'sqrt'"):
        optimizers.make_optimizer(scale_learning_rate="cubic")
    assert np.isfinite(rate(learning_rate=1e-3))
