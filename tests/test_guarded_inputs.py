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
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import image_towers
from vse_tf.models import text_towers
from vse_tf.training import distribute
from vse_tf.training import resume
from vse_tf.training import run_dir


def _fails_cleanly(result, *phrases):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())  # the paragraph is wrapped
    for phrase in phrases:
        assert phrase in text, result.stderr


# TF_CONFIG


@pytest.mark.parametrize(
    "tf_config, phrase",
    [
        ('{"cluster": {"worker": ["127.0.0.1:1"]}', "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", '
            '"index": 0}}',
            "must name one of the cluster's task types",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, '
            '"task": {"type": "worker", "index": 2}}',
            "must be one of 0..1",
        ),
    ],
)
def test_bad_tf_config_is_explained(monkeypatch, tf_config, phrase):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(errors.UserError, match=phrase):
        distribute.cluster_config()


def test_good_tf_config_and_no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster_config() is None
    config = {
        "cluster": {"chief": ["a:1"], "worker": ["b:2"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.cluster_config() == config


@pytest.mark.slow
def test_bad_tf_config_stops_the_trainer_before_training(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(),
        f"--model_dir={tmp_path}",
        env_extra={"TF_CONFIG": "{worker: 0}"},
    )
    _fails_cleanly(result, "TF_CONFIG is not valid JSON")
    assert not os.listdir(tmp_path)


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = (
            task_type,
            task_id,
            cluster,
        )

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, *args):
        self.cluster_resolver = _Resolver(*args)


@pytest.mark.parametrize(
    "task, cluster, chief",
    [
        (("worker", 0), {"worker": ["a:1", "b:2"]}, True),
        (("worker", 1), {"worker": ["a:1", "b:2"]}, False),
        (("chief", 0), {"chief": ["a:1"], "worker": ["b:2"]}, True),
        (("worker", 0), {"chief": ["a:1"], "worker": ["b:2"]}, False),
    ],
)
def test_exactly_one_task_is_the_chief(task, cluster, chief):
    assert distribute.is_chief(_Strategy(*task, cluster)) is chief


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(errors.UserError, match="auto, default, mirrored"):
        distribute.get_strategy("mirored")


# Batch sizes


@pytest.mark.slow
def test_batch_not_divisible_by_replicas(two_replicas):
    distribute.check_batch_size(16, two_replicas)
    with pytest.raises(
        errors.UserError, match="does not split over 2 replicas.* e.g. 14"
    ):
        distribute.check_batch_size(15, two_replicas)


@pytest.mark.slow
def test_batch_larger_than_the_dataset(tfds_dir, tmp_path):
    # shapes/tiny has 256 train images x 5 captions.
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(["train.batch_size = 4096"]),
        f"--model_dir={tmp_path}",
        f"--data_dir={tfds_dir}",
    )
    _fails_cleanly(
        result,
        "train.batch_size = 4096 is larger than the train split",
        "1280 image-caption pairs",
    )
    assert "configurable" not in result.stderr


# Captions


def test_long_and_empty_captions_are_counted():
    captions = tf.data.Dataset.from_tensor_slices(
        ["a red circle", "", "one two three four five", "  ", "Big, red; ok."]
    )
    # Start token + words: 4, 1, 6, 1, 4 tokens.
    assert text_towers.count_long_captions(captions, 4) == (1, 2, 5)
    assert text_towers.count_long_captions(captions, 6) == (0, 2, 5)


@pytest.mark.slow
def test_training_logs_how_many_captions_are_cut(
    trained_run, tfds_dir, tmp_path
):
    _, result = trained_run
    assert "are cut" not in result.stdout  # demo captions fit in 21 tokens
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "build_text_tower.max_length = 5",
                "train.epochs = 1",
                "train.steps_per_epoch = 1",
                "train.export = False",
                "train.projector_images = 0",
            ]
        ),
        f"--model_dir={tmp_path}",
        f"--data_dir={tfds_dir}",
    )
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


def test_differences_name_every_changed_binding_and_follow_macros():
    new = (
        OLD.replace("EMBEDDING_DIM = 8", "EMBEDDING_DIM = 16")
        .replace("train.epochs = 2", "train.epochs = 9")
        .replace("(8, 4, 4)", "(8, 4, 2)")
    )
    assert resume.differences(OLD, new) == [
        ("EMBEDDING_DIM", "8", "16"),
        ("build_image_tower.conv_layers", "((8, 4, 4),)", "((8, 4, 2),)"),
        ("build_image_tower.embedding_dim", "8", "16"),
        ("train.epochs", "2", "9"),
    ]
    assert resume.differences(OLD, OLD) == []


def _backed_up_run(tmp_path, model, dataset="shapes"):
    run = run_dir.RunDir(str(tmp_path / "run"))
    os.makedirs(run.backup)
    model.save_weights(run.backup_weights)
    run.write_run_info({"dataset": dataset})
    return run


def _precomputed_model(pooling, regions=3):
    # Any factory: the check looks at the weights, not at binding names.
    model = dual_encoder.DualEncoder(
        image_towers.build_precomputed_tower(
            feature_dim=6, regions=regions, embedding_dim=4, pooling=pooling
        ),
        text_towers.build_text_tower(
            ["a", "b"], max_length=4, word_dim=3, units=4, embedding_dim=4
        ),
    )
    model(model.dummy_inputs())
    return model


def test_resume_check_compares_the_weights_not_binding_names(tmp_path):
    run = _backed_up_run(tmp_path, _precomputed_model("mean"))
    resume.check_backup(run, _precomputed_model("mean"), "shapes")
    # GPO pooling adds weights: another model, whatever built it.
    with pytest.raises(
        errors.UserError,
        match=r"cannot be resumed: \d+ of "
        r"its weights differ .*\(none\) -> \[",
    ):
        resume.check_backup(run, _precomputed_model("gpo"), "shapes")
    # One global feature vector in place of mean-pooled regions: the same
    # weights, so the backup restores.
    resume.check_backup(run, _precomputed_model("mean", regions=None), "shapes")


def _headed_model(linear_shortcut):
    from vse_tf.models import pretrained_towers
    from vse_tf.models import towers

    def tower():
        head = pretrained_towers.projection_head(
            6, 5, 4, linear_shortcut=linear_shortcut
        )
        features = keras.Input((6,))
        return towers.Tower(features, head(features), head=head)

    model = dual_encoder.DualEncoder(tower(), tower())
    model(model.dummy_inputs())
    return model


def test_resume_check_refuses_a_linear_shortcut_added(tmp_path):
    run = _backed_up_run(tmp_path, _headed_model(linear_shortcut=False))
    # Both towers' shortcut kernels and biases: new weights.
    with pytest.raises(
        errors.UserError,
        match=r"4 of its weights differ "
        r"from this model's \(.*dense_2/vars/0 \(none\) -> "
        r"\[6, 4\]",
    ):
        resume.check_backup(run, _headed_model(linear_shortcut=True), "shapes")


def test_resume_check_refuses_cache_features_switched(tmp_path):
    model = _precomputed_model("mean")
    run = _backed_up_run(tmp_path, model)
    run.write_run_info({"dataset": "shapes", "cache_features": True})
    with pytest.raises(
        errors.UserError,
        match="trained with train.cache_features = True, this run sets False",
    ):
        resume.check_backup(run, model, "shapes", cache_features=False)
    resume.check_backup(run, model, "shapes", cache_features=True)


def test_resume_check_refuses_another_dataset(tmp_path):
    model = _precomputed_model("mean")
    run = _backed_up_run(tmp_path, model, dataset="shapes")
    with pytest.raises(
        errors.UserError,
        match="trained on 'shapes', this run is configured for 'flickr8k'",
    ):
        resume.check_backup(run, model, "flickr8k")


@pytest.mark.slow
def test_resuming_with_another_model_names_the_bindings(
    trained_run, tfds_dir, tmp_path
):
    import shutil

    model_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], model_dir)
    before = sorted(os.listdir(model_dir / "checkpoints"))
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(["build_text_tower.units = 12"]),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    _fails_cleanly(
        result, "cannot be resumed", "build_text_tower.units was 8, now 12"
    )
    assert sorted(os.listdir(model_dir / "checkpoints")) == before


# Learning-rate scaling


def test_learning_rate_scales_with_the_global_batch():
    def rate(**kwargs):
        optimizer = optimizers.make_optimizer(base_batch_size=128, **kwargs)
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    assert rate(learning_rate=1e-3, global_batch_size=512) == (
        pytest.approx(1e-3)
    )
    assert rate(
        learning_rate=1e-3, global_batch_size=512, scale_learning_rate="linear"
    ) == pytest.approx(4e-3)
    assert rate(
        learning_rate=1e-3, global_batch_size=512, scale_learning_rate="sqrt"
    ) == pytest.approx(2e-3)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    scaled = optimizers.make_optimizer(
        learning_rate=schedule,
        scale_learning_rate="linear",
        base_batch_size=128,
        global_batch_size=256,
    )._learning_rate
    for step in (0, 10, 25):
        assert float(scaled(step)) == pytest.approx(2 * float(schedule(step)))
    config = keras.optimizers.schedules.serialize(scaled)
    again = keras.optimizers.schedules.deserialize(config)
    assert float(again(25)) == pytest.approx(float(scaled(25)))
    with pytest.raises(errors.UserError, match="'linear', 'sqrt'"):
        optimizers.make_optimizer(scale_learning_rate="cubic")
    assert np.isfinite(rate(learning_rate=1e-3))


def test_a_run_folder_of_the_old_weights_layout_loads_and_resumes(tmp_path):
    # Before towers were Tower models, Keras filed the text tower under
    # layers/functional_1; the same weights must load, and resume.
    import h5py

    from vse_tf.training import legacy_weights

    model = _precomputed_model("mean")
    run = _backed_up_run(tmp_path, model)
    backup = run.backup_weights
    with h5py.File(backup, "r+") as stored:
        stored.move("layers/tower_1", "layers/functional_1")
    resume.check_backup(run, _precomputed_model("mean"), "shapes")
    fresh = _precomputed_model("mean")
    legacy_weights.load(fresh, backup, "backup", "")
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with h5py.File(backup, "r") as stored:  # the file itself is untouched
        assert "layers/functional_1" in stored
