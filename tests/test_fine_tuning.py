"""Backbone fine-tuning: a learning-rate multiplier per variable, and
backbones frozen for the first epochs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import bindings
from tests.conftest import run_tool
from vse_tf import errors
from vse_tf import losses
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import towers
from vse_tf.training import fine_tuning
from vse_tf.training import precision


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_multiplier_scales_the_variables_update(name):
    optimizer = optimizers.make_optimizer(
        name, learning_rate=0.1, global_clipnorm=None
    )
    scaled, plain = keras.Variable([1.0, 2.0]), keras.Variable([3.0])
    optimizer.build([scaled, plain])
    optimizer.multiply_learning_rate([scaled], 0.25)
    optimizer.apply_gradients(
        [(tf.constant([0.5, -2.0]), scaled), (tf.constant([4.0]), plain)]
    )
    if name == "sgd":  # w -= lr * g
        np.testing.assert_allclose(
            scaled.numpy(), [1.0 - 0.025 * 0.5, 2.0 + 0.025 * 2.0]
        )
        np.testing.assert_allclose(plain.numpy(), [3.0 - 0.1 * 4.0])
    else:  # Adam's first step moves each weight by lr against the sign
        np.testing.assert_allclose(scaled.numpy(), [0.975, 2.025], rtol=1e-5)
        np.testing.assert_allclose(plain.numpy(), [2.9], rtol=1e-5)


@pytest.mark.slow
def test_the_multiplier_holds_across_replicas(two_replicas):
    strategy = two_replicas
    with strategy.scope():
        optimizer = optimizers.make_optimizer(
            "sgd", learning_rate=1.0, global_clipnorm=None
        )
        scaled, plain = keras.Variable([0.0]), keras.Variable([0.0])
        optimizer.build([scaled, plain])
    optimizer.multiply_learning_rate([scaled], 0.5)

    @tf.function
    def step():
        def replica_step():
            # Each replica's gradient is 1; they sum to 2.
            optimizer.apply_gradients(
                [(tf.ones([1]), scaled), (tf.ones([1]), plain)]
            )

        strategy.run(replica_step)

    step()
    np.testing.assert_allclose(scaled.numpy(), [-1.0])
    np.testing.assert_allclose(plain.numpy(), [-2.0])


def _tower(name, inputs, backbone_layers):
    """A tower in the layout of the pretrained ones: `backbone`, `head`."""
    x = keras.Input(inputs.shape[1:])
    backbone = keras.Sequential(backbone_layers, name="backbone")
    head = keras.Sequential(
        [keras.layers.Dense(4), keras.layers.UnitNormalization()], name="head"
    )
    return towers.Tower(
        x, head(backbone(x)), name=name, backbone=backbone, head=head
    )


def _model():
    keras.utils.set_random_seed(3)
    images = keras.Input((6, 6, 3))
    texts = keras.Input((5,))
    model = dual_encoder.DualEncoder(
        _tower(
            "image_tower",
            images,
            [
                keras.layers.Conv2D(4, 3),
                keras.layers.BatchNormalization(),
                keras.layers.GlobalAveragePooling2D(),
            ],
        ),
        _tower("text_tower", texts, [keras.layers.Dense(6)]),
    )
    batch = (
        {
            "image": np.random.default_rng(0)
            .normal(size=(8, 6, 6, 3))
            .astype(np.float32),
            "caption": np.random.default_rng(1)
            .normal(size=(8, 5))
            .astype(np.float32),
        },
        np.arange(8),
    )
    model(batch[0])
    optimizer = optimizers.make_optimizer(
        "sgd", learning_rate=0.5, global_clipnorm=None
    )
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # What compile wraps it in, but starting at a scale whose first
        # step does not overflow (and so is not skipped).
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=2.0**4
        )
    model.compile(optimizer=optimizer, loss=losses.AllNegativesLoss())
    return model, tf.data.Dataset.from_tensors(batch).repeat()


def _weights(model, part):
    """Every weight of both towers' `part` ("backbone" or "head"),
    copied."""
    return [
        w.numpy().copy()
        for tower in (model.image_tower, model.text_tower)
        for w in getattr(tower, part).weights
    ]


class _Snapshots(keras.callbacks.Callback):
    """The backbones' and heads' weights at the start and after each
    epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def _snapshot(self):
        self.epochs.append(
            {part: _weights(self.model, part) for part in ("backbone", "head")}
        )

    def on_train_begin(self, logs=None):
        self._snapshot()

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot()


def _fit(multiplier, frozen_epochs, jit_compile=False, microbatch_size=None):
    model, data = _model()
    model.compile_step(jit_compile, microbatch_size)
    snapshots = _Snapshots()
    tuner = fine_tuning.fine_tune_backbones(
        model, learning_rate_multiplier=multiplier, frozen_epochs=frozen_epochs
    )
    model.fit(
        data,
        epochs=3,
        steps_per_epoch=1,
        verbose=0,
        callbacks=[tuner, snapshots],
    )
    return model, snapshots.epochs


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_frozen_backbones_do_not_move_then_train(jit_compile):
    model, epochs = _fit(1.0, frozen_epochs=2, jit_compile=jit_compile)
    start, first, second, third = epochs
    for earlier, later in ((start, first), (first, second)):
        # Frozen: no weight of either backbone moves, not even the batch
        # norm's moving statistics; the heads train.
        assert not any(_changed(earlier["backbone"], later["backbone"]))
        assert all(_changed(earlier["head"], later["head"]))
    # Epoch 3: every backbone weight moves, moving statistics included.
    assert all(_changed(second["backbone"], third["backbone"]))
    # fit leaves the backbones trainable, as the model was built.
    assert all(b.trainable for b in model.backbones())


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_slices_fine_tune_as_the_whole_batch(policy):
    # Gradient caching (slices of 4 of the batch of 8) with a frozen then
    # trained backbone holding a batch norm, and float16's loss scaling:
    # while the backbones are frozen the heads take the whole batch's
    # steps and the backbones, moving statistics included, stay put; then
    # everything trains (the batch norm by each slice's statistics, so
    # from here on the runs differ by design).
    with precision.policy(policy):
        _, whole = _fit(1.0, frozen_epochs=2)
        _, sliced = _fit(1.0, frozen_epochs=2, microbatch_size=4)
    # float16 keeps 11 bits: its rounding, through steps of rate 0.5.
    tolerance = 1e-5 if policy == "float32" else 2e-2
    for found, expected in zip(sliced[:3], whole[:3]):
        for a, b in zip(found["head"], expected["head"]):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
        for a, b in zip(found["backbone"], sliced[0]["backbone"]):
            np.testing.assert_array_equal(a, b)
    assert all(_changed(sliced[2]["backbone"], sliced[3]["backbone"]))
    assert all(_changed(sliced[2]["head"], sliced[3]["head"]))


@pytest.mark.parametrize(
    "policy", ["float32", "mixed_bfloat16", "mixed_float16"]
)
def test_backbones_learn_at_the_multiple_of_the_rate(policy):
    # Same start, same data, plain SGD: with the backbones frozen for the
    # first epoch, both runs are equal when they unfreeze, so in epoch 2
    # the backbones' steps differ by exactly the multiplier and the heads'
    # not at all. In every precision: mixed_float16 wraps the optimizer in
    # a LossScaleOptimizer, whose inner optimizer holds the multipliers.
    with precision.policy(policy):
        model, tenth = _fit(0.1, frozen_epochs=1)
        _, full = _fit(1.0, frozen_epochs=1)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )
    assert all(_changed(tenth[0]["head"], tenth[1]["head"]))
    for part in ("backbone", "head"):
        for a, b in zip(tenth[1][part], full[1][part]):
            np.testing.assert_array_equal(a, b)
    # In `_weights`' order; the batch norm's moving statistics take no
    # gradient step.
    trainable = [
        w.trainable
        for tower in (model.image_tower, model.text_tower)
        for w in tower.backbone.weights
    ]
    assert trainable.count(False) == 2
    for is_trainable, t1, t2, f1, f2 in zip(
        trainable,
        tenth[1]["backbone"],
        tenth[2]["backbone"],
        full[1]["backbone"],
        full[2]["backbone"],
    ):
        if is_trainable:
            np.testing.assert_allclose(
                t2 - t1, 0.1 * (f2 - f1), rtol=1e-4, atol=1e-7
            )
            assert np.abs(f2 - f1).max() > 0
    for a, b in zip(tenth[2]["head"], full[2]["head"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_fine_tuning_without_a_trainable_backbone_is_refused():
    model, _ = _model()
    for backbone in model.backbones():
        backbone.trainable = False
    with pytest.raises(errors.UserError, match="trainable_backbone = True"):
        fine_tuning.fine_tune_backbones(model, frozen_epochs=1)
    model, _ = _model()
    with pytest.raises(errors.UserError, match="cache_features"):
        fine_tuning.fine_tune_backbones(
            model, cache_features=True, learning_rate_multiplier=0.1
        )
    with pytest.raises(errors.UserError, match=">= 0"):
        fine_tuning.fine_tune_backbones(model, frozen_epochs=-1)
    # The defaults leave training as it was: no callback.
    assert fine_tuning.fine_tune_backbones(model) is None


def _heads_with_fine_tuned_stages(multiplier):
    """Heads on cached features, the image head holding a pretrained part
    (as build_efficientnet_tower.fine_tuned_stages makes one)."""
    keras.utils.set_random_seed(5)
    features = keras.Input((6,))
    stages = keras.Sequential(
        [keras.layers.Dense(5, activation="relu")], name="fine_tuned_lite0"
    )
    projection = keras.layers.Dense(4, name="projection")
    image_head = towers.Tower(
        features,
        keras.layers.UnitNormalization()(projection(stages(features))),
        name="head",
        fine_tuned=[stages],
    )
    text_head = keras.Sequential(
        [keras.layers.Dense(4), keras.layers.UnitNormalization()]
    )
    model = dual_encoder.DualEncoder(image_head, text_head)
    rng = np.random.default_rng(0)
    batch = (
        {
            "image": rng.normal(size=(8, 6)).astype(np.float32),
            "caption": rng.normal(size=(8, 3)).astype(np.float32),
        },
        np.arange(8),
    )
    model(batch[0])
    model.compile(
        optimizer=optimizers.make_optimizer(
            "sgd", learning_rate=0.5, global_clipnorm=None
        ),
        loss=losses.AllNegativesLoss(),
    )
    tuner = fine_tuning.fine_tune_backbones(
        model, cache_features=True, learning_rate_multiplier=multiplier
    )
    # (At 1.0 there is nothing to do: no callback.)
    assert tuner is None if multiplier == 1.0 else tuner.backbones == [stages]
    before = [w.numpy().copy() for w in (*stages.weights, *projection.weights)]
    model.fit(
        tf.data.Dataset.from_tensors(batch).repeat(),
        epochs=1,
        steps_per_epoch=1,
        verbose=0,
        callbacks=[tuner] if tuner else [],
    )
    after = [w.numpy() for w in (*stages.weights, *projection.weights)]
    return [a - b for a, b in zip(after, before)]


def test_stages_fine_tuned_in_a_head_learn_at_the_multiple_on_cached_features():
    tenth, full = (_heads_with_fine_tuned_stages(m) for m in (0.1, 1.0))
    # Kernel and bias of the fine-tuned stages: a tenth of the step; the
    # projection after them: the same step.
    for t, f in zip(tenth[:2], full[:2]):
        np.testing.assert_allclose(t, 0.1 * f, rtol=1e-4, atol=1e-8)
        assert np.abs(f).max() > 0
    for t, f in zip(tenth[2:], full[2:]):
        np.testing.assert_allclose(t, f, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_a_float16_run_fine_tunes_a_backbone_end_to_end(tfds_dir, tmp_path):
    # The program as a T4 or V100 user runs it: mixed_float16, a trainable
    # ResNet frozen for its first epoch, then at a tenth of the rate.
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "train.mixed_precision = 'mixed_float16'",
                "train.export = False",
                "train.projector_images = 0",
                "train.steps_per_epoch = 2",
                "build_dual_encoder.image_tower_fn = @build_backbone_tower",
                "build_backbone_tower.backbone = 'resnet50'",
                "build_backbone_tower.weights = 'random'",
                "build_backbone_tower.input_size = 32",
                "build_backbone_tower.crop_size = 32",
                "build_backbone_tower.embedding_dim = 8",
                "build_backbone_tower.trainable_backbone = True",
                "fine_tune_backbones.learning_rate_multiplier = 0.1",
                "fine_tune_backbones.frozen_epochs = 1",
            ]
        ),
        f"--model_dir={tmp_path}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in mixed_float16" in result.stdout
    assert "epoch 1: backbones frozen" in result.stdout
    assert "epoch 2: backbones training, at 0.1x the learning rate" in (
        result.stdout
    )
    assert (tmp_path / "metrics.json").exists()
