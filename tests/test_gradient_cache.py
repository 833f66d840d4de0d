"""Gradient caching (`train.microbatch_size`) trains what the whole batch
trains: the same loss, gradients and weights, on one device and on two
replicas, with the clip on, and with dropout replayed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import assert_same_training
from tests.conftest import bindings
from tests.conftest import read_weights
from tests.conftest import run_tool
from tests.test_dual_encoder import VOCABULARY
from tools import bench_train
from vse_tf import errors
from vse_tf import losses
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import gradient_cache
from vse_tf.models import text_towers
from vse_tf.training import distribute
from vse_tf.training import run_dir

BATCH = 16
WORDS = ["a", "red", "blue", "circle", "square", "left", "of", "the"]


def demo_model():
    """gin/demo.gin's towers (a CNN over 64x64 pixels, a GRU) and its
    learned temperature, as tools/bench_train.py builds them."""
    keras.utils.set_random_seed(0)
    return bench_train.demo_model(VOCABULARY)[0]


def dropout_model():
    """Towers with dropout (and a batch norm) in training mode."""
    keras.utils.set_random_seed(0)
    pixels = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 4, strides=4, activation="relu")(pixels)
    )
    x = keras.layers.Dropout(0.5)(keras.layers.Dense(32, "relu")(x))
    x = keras.layers.BatchNormalization()(x)
    image = keras.layers.UnitNormalization()(keras.layers.Dense(16)(x))
    text = text_towers.build_text_tower(
        VOCABULARY, max_length=8, word_dim=8, units=16, embedding_dim=16
    )
    return dual_encoder.DualEncoder(
        keras.Model(pixels, image, name="image_tower"), text
    )


def pairs(steps=3, seed=0):
    """`steps` batches of BATCH pairs, several captions of one image."""
    rng = np.random.default_rng(seed)
    count = BATCH * steps
    images = rng.uniform(0, 255, size=(count, 64, 64, 3)).astype(np.float32)
    ids = rng.integers(0, count // 2, size=count)
    images = images[ids]  # repeated images: pairs of one image
    captions = np.array(
        [
            " ".join(rng.choice(WORDS, size=rng.integers(0, 7)))
            for _ in range(count)
        ]
    )
    return tf.data.Dataset.from_tensor_slices(
        ({"image": images, "caption": captions}, ids.astype(np.float32))
    ).batch(BATCH)


def train(
    model,
    loss,
    microbatch_size,
    strategy=None,
    steps=3,
    jit=False,
    **optimizer,
):
    """The loss and the weights after `steps` clipped steps (Adam unless
    `optimizer` says otherwise)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model.compile(
            optimizer=optimizers.make_optimizer(
                **{"learning_rate": 1e-2, "global_clipnorm": 0.05, **optimizer}
            ),
            loss=loss,
        )
    model.compile_step(jit, microbatch_size)
    history = model.fit(pairs(steps), epochs=1, verbose=0)
    return history.history["loss"][0], {
        str(i): w.numpy() for i, w in enumerate(model.weights)
    }


def start_weights(make_model, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model()
        model(next(iter(pairs()))[0])
    return model


LOSSES = {
    "convse": lambda: losses.AllNegativesLoss(),
    "convse++": lambda: losses.HardestNegativeLoss(),
    "vse++": lambda: losses.HingeLoss(max_violation=True, reduction="sum"),
}


def loss_and_gradients(model, loss, microbatch_size):
    """The training step's loss and gradients on the first batch."""
    model.compile(optimizer=optimizers.make_optimizer(), loss=loss)
    model.compile_step(False, microbatch_size)
    inputs, ids = next(iter(pairs()))
    tokens = model.tokenizer(inputs["caption"])
    step = tf.function(model._loss_and_gradients)
    loss, gradients = step(inputs["image"], tokens, ids)
    return float(loss), [
        None if g is None else tf.convert_to_tensor(g).numpy()
        for g in gradients
    ]


def global_difference(found, expected):
    """|found - expected| / |expected| over all gradients as one vector."""
    assert [g is None for g in found] == [g is None for g in expected]
    pairs = [(f, e) for f, e in zip(found, expected) if e is not None]
    difference = sum(float(np.sum((f - e) ** 2)) for f, e in pairs)
    norm = sum(float(np.sum(e**2)) for _, e in pairs)
    return (difference / norm) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("slice_size", [4, 1])
def test_slices_give_the_loss_and_gradients_of_the_whole_batch(
    loss, slice_size
):
    expected_loss, expected = loss_and_gradients(
        start_weights(demo_model), LOSSES[loss](), None
    )
    found_loss, found = loss_and_gradients(
        start_weights(demo_model), LOSSES[loss](), slice_size
    )
    assert found_loss == pytest.approx(expected_loss, rel=1e-6)
    # Float32 sums taken in another order: about 1e-6 of the norm.
    assert global_difference(found, expected) < 1e-5
    # The temperature is learned: its gradient comes from the loss alone.
    assert expected[-1] is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss,optimizer",
    [
        ("convse", "sgd"),
        ("convse++", "sgd"),
        ("vse++", "sgd"),
        ("convse", "adam"),
    ],
)
def test_slices_train_the_weights_of_the_whole_batch(loss, optimizer):
    # The clip (0.05) acts on every step: the gradient's norm is far above.
    settings = {
        "name": optimizer,
        "learning_rate": 0.5 if optimizer == "sgd" else 1e-2,
    }
    whole = start_weights(demo_model)
    begin = {str(i): w.numpy() for i, w in enumerate(whole.weights)}
    whole_loss, expected = train(whole, LOSSES[loss](), None, **settings)
    sliced = start_weights(demo_model)
    sliced_loss, found = train(sliced, LOSSES[loss](), 4, **settings)
    assert sliced_loss == pytest.approx(whole_loss, rel=1e-5)
    # Adam divides by the root of the squared gradient: where that is near
    # zero, rounding of 1e-6 moves a weight visibly (two replicas against
    # one device, both whole: 0.1% of the update).
    assert_same_training(
        found, expected, begin, relative=1e-4 if optimizer == "sgd" else 1e-3
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["convse", "vse++"])
def test_slices_on_two_replicas_train_the_weights_of_one_device(
    loss, two_replicas
):
    # Each replica computes its 8 pairs in slices of 2, against the
    # negatives of both replicas.
    whole = start_weights(demo_model)
    begin = {str(i): w.numpy() for i, w in enumerate(whole.weights)}
    # SGD: Adam turns rounding in near-zero gradients into visible steps,
    # and two replicas differ from one device by 0.1% of the update with
    # Adam and the whole batch too.
    sgd = {"name": "sgd", "learning_rate": 0.5}
    _, expected = train(whole, LOSSES[loss](), None, **sgd)
    sliced = start_weights(demo_model, two_replicas)
    sliced.set_weights([begin[str(i)] for i in range(len(begin))])
    _, found = train(sliced, LOSSES[loss](), 2, two_replicas, **sgd)
    assert_same_training(found, expected, begin)


def sliced_under_one_tape(model, pixels, tokens, ids, slice_size):
    """The reference: each tower run slice by slice (drawing the random
    numbers gradient caching draws), all slices under one tape."""
    starts = range(0, len(ids), slice_size)
    with tf.GradientTape() as tape:
        images, texts = (
            tf.concat(
                [tower(x[i : i + slice_size], training=True) for i in starts],
                axis=0,
            )
            for tower, x in (
                (model.image_tower, pixels),
                (model.text_encoder, tokens),
            )
        )
        loss, scaled_loss = model.batch_loss(images, texts, ids)
    return float(loss), [
        tf.convert_to_tensor(g).numpy()
        for g in tape.gradient(scaled_loss, model.trainable_weights)
    ]


def state_values(model):
    return [
        tf.convert_to_tensor(v).numpy()
        for v in gradient_cache.forward_state(model)
    ]


@pytest.mark.slow
def test_the_second_pass_replays_the_random_state_of_the_first():
    # Dropout draws other masks in every slice; a second pass drawing new
    # ones would back-propagate through other embeddings than the loss saw.
    models = []
    for _ in range(2):
        model = start_weights(dropout_model)
        model.compile(
            optimizer=optimizers.make_optimizer(), loss=LOSSES["convse"]()
        )
        models.append(model)
    inputs, ids = next(iter(pairs()))
    tokens = models[0].tokenizer(inputs["caption"])
    expected_loss, expected = sliced_under_one_tape(
        models[0], inputs["image"], tokens, ids, 4
    )
    found_loss, found = gradient_cache.loss_and_gradients(
        models[1], inputs["image"], tokens, ids, 4
    )
    assert float(found_loss) == pytest.approx(expected_loss, rel=1e-6)
    found = [tf.convert_to_tensor(g).numpy() for g in found]
    assert global_difference(found, expected) < 1e-5
    # Seeds advanced and batch norm's moving statistics updated once a
    # slice, as the reference's one pass left them.
    state = {v.path for v in gradient_cache.forward_state(models[1])}
    norm = [
        layer
        for layer in models[1].image_tower.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ][0]
    dropout = [
        layer
        for layer in models[1].image_tower.layers
        if isinstance(layer, keras.layers.Dropout)
    ][0]
    assert {
        norm.moving_mean.path,
        norm.moving_variance.path,
        dropout.seed_generator.state.path,
    } <= state
    for a, b in zip(state_values(models[1]), state_values(models[0])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert gradient_cache.batch_norm_layers(models[1]) == [norm.name]


@pytest.mark.slow
def test_an_xla_step_in_slices_takes_the_same_step():
    whole = start_weights(demo_model)
    begin = {str(i): w.numpy() for i, w in enumerate(whole.weights)}
    sgd = {"name": "sgd", "learning_rate": 0.5}
    _, expected = train(whole, LOSSES["convse"](), None, steps=1, **sgd)
    sliced = start_weights(demo_model)
    _, found = train(sliced, LOSSES["convse"](), 4, steps=1, jit=True, **sgd)
    assert_same_training(found, expected, begin)


@pytest.mark.slow
def test_slices_in_bfloat16_follow_the_whole_batch():
    # Mixed precision rounds each slice's activations to bfloat16 (8 bits
    # of mantissa): the gradients agree to that precision.
    from vse_tf.training import precision

    with precision.policy("mixed_bfloat16"):
        results = [
            loss_and_gradients(start_weights(demo_model), LOSSES["convse"](), m)
            for m in (None, 4)
        ]
    (expected_loss, expected), (found_loss, found) = results
    assert found_loss == pytest.approx(expected_loss, rel=1e-2)
    assert global_difference(found, expected) < 2e-2


def test_a_slice_that_does_not_divide_a_replica_batch_is_an_error(
    two_replicas,
):
    distribute.check_batch_size(16, two_replicas, 8)
    distribute.check_batch_size(16, two_replicas, 1)
    with pytest.raises(errors.UserError) as raised:
        distribute.check_batch_size(16, two_replicas, 3)
    said = str(raised.value)
    assert "train.microbatch_size = 3" in said and "16 / 2 = 8" in said
    assert "e.g. 2" in said or "e.g. 4" in said
    with pytest.raises(errors.UserError, match="train.microbatch_size"):
        distribute.check_batch_size(16, two_replicas, 16)


@pytest.mark.slow
def test_a_training_run_in_slices_ends_with_the_whole_batch_weights(
    tfds_dir, tmp_path
):
    # Float32 SGD with the clip on, through `python -m vse_tf.train`; a
    # run at learning rate 0 keeps the initial weights.
    runs = {}
    for slices, rate in ((None, 0.5), (4, 0.5), (None, 0.0)):
        model_dir = tmp_path / f"slices{slices}_rate{rate}"
        result = run_tool(
            "train",
            "--gin_file=gin/demo.gin",
            *bindings(
                [
                    "train.mixed_precision = 'float32'",
                    "train.projector_images = 0",
                    "train.export = False",
                    "make_optimizer.name = 'sgd'",
                    f"CosineDecayOverRun.initial_learning_rate = {rate}",
                    "make_optimizer.global_clipnorm = 0.05",
                    f"train.microbatch_size = {slices}",
                ]
            ),
            f"--model_dir={model_dir}",
            f"--data_dir={tfds_dir}",
        )
        assert result.returncode == 0, result.stderr
        runs[slices, rate] = run_dir.RunDir(str(model_dir))
        if slices:
            assert "in slices of 4 (gradient caching)" in result.stdout
            assert runs[slices, rate].read_run_info()["microbatch_size"] == 4
    found, expected, start = (
        read_weights(runs[key].backup_weights)
        for key in ((4, 0.5), (None, 0.5), (None, 0.0))
    )
    assert_same_training(found, expected, start)


class MeanSquaredGap(keras.losses.Loss):
    """A loss of one's own, not a `CrossModalLoss`: taken whole."""

    def call(self, y_true, y_pred):
        del y_true
        gap = y_pred["image"] - tf.reverse(y_pred["text"], axis=[0])
        return tf.reduce_sum(gap**2, axis=1)


@pytest.mark.slow
def test_a_loss_of_ones_own_is_taken_whole_with_the_same_gradients():
    expected_loss, expected = loss_and_gradients(
        start_weights(demo_model), MeanSquaredGap(), None
    )
    found_loss, found = loss_and_gradients(
        start_weights(demo_model), MeanSquaredGap(), 4
    )
    assert found_loss == pytest.approx(expected_loss, rel=1e-6)
    assert global_difference(found, expected) < 1e-5
