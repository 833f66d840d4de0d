"""Warm start: what matches loads, the rest stays new, and mistakes are
refused."""

import json
import os

import keras
import numpy as np
import pytest

from tests.conftest import bindings
from tests.conftest import run_tool
from vse_tf import errors
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import image_towers
from vse_tf.models import text_towers
from vse_tf.training import warm_start


def _model(embedding_dim=4, learnable_temperature=None, seed=0):
    keras.utils.set_random_seed(seed)
    model = dual_encoder.DualEncoder(
        image_towers.build_precomputed_tower(
            feature_dim=6, embedding_dim=embedding_dim
        ),
        text_towers.build_text_tower(
            ["a", "b"],
            max_length=4,
            word_dim=3,
            units=4,
            embedding_dim=embedding_dim,
        ),
        learnable_temperature=learnable_temperature,
    )
    model(model.dummy_inputs())
    model.compile(optimizer=optimizers.make_optimizer("adam"))
    return model


def _base(tmp_path, **kwargs):
    base = _model(seed=1, **kwargs)
    path = str(tmp_path / "base.weights.h5")
    base.save_weights(path)
    return base, path


def test_matching_weights_load_and_the_rest_stay_new(tmp_path):
    base, path = _base(tmp_path)
    # The new run learns a temperature the base did not have.
    model = _model(learnable_temperature=0.07)
    table = warm_start.warm_start(model, path).table
    for ours, theirs in zip(
        model.image_tower.weights + model.text_tower.weights,
        base.image_tower.weights + base.text_tower.weights,
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert float(model.temperature()) == pytest.approx(0.07)  # left new
    assert int(model.optimizer.iterations.numpy()) == 0  # a fresh start
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    loaded = len(base.image_tower.weights + base.text_tower.weights)
    assert rows["loaded"].split()[1] == str(loaded)
    assert rows["new"].split()[2] == "1"  # the temperature
    assert rows["skipped"].split()[3] == "0"


def test_weights_of_the_base_alone_are_skipped(tmp_path):
    _, path = _base(tmp_path, learnable_temperature=0.07)
    table = warm_start.warm_start(_model(), path).table
    assert table.splitlines()[3].split()[3] == "1"  # its temperature


def test_another_shape_in_the_same_place_is_refused(tmp_path):
    _, path = _base(tmp_path)
    with pytest.raises(
        errors.UserError,
        match=r"same place but another "
        r"shape \(.*\[6, 4\] in the base, \[6, 8\] here",
    ):
        warm_start.warm_start(_model(embedding_dim=8), path)


def test_a_base_with_nothing_in_common_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    with pytest.raises(errors.UserError, match="so no tower would start warm"):
        warm_start.warm_start(_model(), path)


def test_a_base_sharing_only_the_temperature_is_refused(tmp_path):
    # The learned temperature's place, "vars/0", is the same in every
    # dual encoder: loading it alone would replace the configured
    # temperature and warm neither tower.
    import h5py

    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as f:
        f["vars/0"] = np.float32(-2.0)
        f["layers/other_tower/vars/0"] = np.zeros((3, 2), np.float32)
    model = _model(learnable_temperature=0.07)
    with pytest.raises(
        errors.UserError,
        match=r"so no tower would start "
        r"warm \(only vars/0\)",
    ):
        warm_start.warm_start(model, str(path))
    assert float(model.temperature()) == pytest.approx(0.07)  # unchanged


def test_a_tower_warmed_by_less_than_half_is_reported(tmp_path):
    import h5py

    _, path = _base(tmp_path)
    with h5py.File(path, "r+") as f:  # the text tower's words and GRU
        gone = []
        f.visititems(
            lambda name, item: (
                gone.append(name)
                if isinstance(item, h5py.Dataset)
                and ("embedding" in name or "gru" in name)
                else None
            )
        )
        for name in gone:
            del f[name]
    assert len(gone) == 4
    model = _model()
    report = warm_start.warm_start(model, path)
    text, image = model.text_tower, model.image_tower
    assert report.towers == {
        image.name: {"loaded": len(image.weights), "of": len(image.weights)},
        text.name: {"loaded": 2, "of": 6},
    }
    assert report.table.splitlines()[-1] == (
        f"WARNING: the {text.name} takes only 2 of its 6 weights from the "
        "base; the rest start from their initialization."
    )
    assert "WARNING" not in report.table.splitlines()[-2]


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(errors.UserError, match="names no weights"):
        warm_start.warm_start(_model(), str(tmp_path))


@pytest.mark.slow
def test_a_warm_started_run_begins_where_its_base_ended(
    trained_run, tfds_dir, tmp_path
):
    base_dir, _ = trained_run
    with open(os.path.join(base_dir, "checkpoints", "best.json")) as f:
        base_best = json.load(f)["val_rsum"]
    model_dir = tmp_path / "warm"
    # With a learning rate of 0 the first epoch keeps the base's weights:
    # its validation is the base's best to the digit.
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                f"train.init_from = '{base_dir}'",
                "train.epochs = 1",
                "make_optimizer.learning_rate = 0.0",
                "train.export = False",
                "train.projector_images = 0",
            ]
        ),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warm start from" in result.stdout and "loaded" in result.stdout
    with open(model_dir / "checkpoints" / "best.json") as f:
        assert json.load(f)["val_rsum"] == pytest.approx(base_best)
    with open(model_dir / "operative_config.gin") as f:
        assert f"train.init_from = '{base_dir}'" in f.read()
    # run.json records what each tower took: here, all of it.
    with open(model_dir / "run.json") as f:
        record = json.load(f)["warm_start"]
    assert record.pop("from") == base_dir and len(record) == 2
    assert all(0 < tower["loaded"] == tower["of"] for tower in record.values())


def test_weights_copy_between_the_paths_each_file_has(tmp_path):
    # A heads model (train.cache_features) files its text head under
    # "layers/functional_1", the name older tower files used: matched by
    # the name both are read as, copied between the paths they really have.
    import h5py

    source, target = tmp_path / "base.h5", tmp_path / "new.h5"
    path = "layers/functional_1/layers/dense/vars/0"
    for file, value in ((source, 1.0), (target, 0.0)):
        with h5py.File(file, "w") as f:
            f[path] = np.full((3, 2), value, np.float32)
    loaded, new, skipped, mismatched = warm_start._copy_matching(
        str(source), str(target)
    )
    assert len(loaded) == 1 and not (new or skipped or mismatched)
    with h5py.File(target, "r") as f:
        np.testing.assert_array_equal(f[path][...], np.ones((3, 2)))
