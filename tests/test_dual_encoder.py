"""The dual encoder's training step, on one device and on two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import assert_same_training
from vse_tf import losses
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder
from vse_tf.models import image_towers
from vse_tf.models import text_towers

VOCABULARY = ["a", "red", "blue", "circle", "square", "left", "of"]
CAPTIONS = [
    "a red circle",
    "a blue square",
    "red left of blue",
    "a circle",
    "blue circle",
    "a red square",
    "square left of circle",
    "",
]
IDS = np.array([0, 1, 2, 0, 3, 4, 2, 5])


def tiny_model(learnable_temperature=None):
    keras.utils.set_random_seed(0)
    return dual_encoder.DualEncoder(
        image_towers.build_image_tower(
            image_size=16,
            conv_layers=((4, 4, 4),),
            hidden_units=8,
            embedding_dim=8,
        ),
        text_towers.build_text_tower(
            VOCABULARY, max_length=6, word_dim=4, units=8, embedding_dim=8
        ),
        learnable_temperature=learnable_temperature,
    )


def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 16, 16, 3)).astype(np.float32)
    return {"image": images, "caption": np.array(CAPTIONS)}, IDS


def one_step(model, loss):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=loss)
    inputs, ids = batch()
    batches = tf.data.Dataset.from_tensor_slices((inputs, ids)).batch(8)
    history = model.fit(batches, epochs=1, verbose=0)
    return history.history["loss"][0], [w.numpy() for w in model.weights]


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss",
    [
        losses.AllNegativesLoss(),
        losses.HardestNegativeLoss(margin=0.5),
        losses.HingeLoss(max_violation=False),
    ],
    ids=["all", "hardest", "vse0"],
)
def test_two_replicas_train_the_same_weights_as_one_device(loss, two_replicas):
    single = tiny_model()
    single(batch()[0])
    start = [w.numpy() for w in single.weights]
    single_loss, single_weights = one_step(single, loss)

    with two_replicas.scope():
        mirrored = tiny_model()
        mirrored(batch()[0])
        mirrored.set_weights(start)
    mirrored_loss, mirrored_weights = one_step(mirrored, loss)

    assert mirrored_loss == pytest.approx(single_loss, rel=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(single_weights, start))
    assert moved > 1e-3  # the step did change the weights
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32


def _fit(model, loss, optimizer, steps=3):
    """`steps` SGD or Adam steps on shuffled copies of the batch."""
    model.compile(optimizer=optimizer, loss=loss)
    inputs, ids = batch()
    order = np.concatenate(
        [np.random.default_rng(step).permutation(8) for step in range(steps)]
    )
    data = tf.data.Dataset.from_tensor_slices(
        ({name: value[order] for name, value in inputs.items()}, ids[order])
    ).batch(8)
    model.fit(data, epochs=1, verbose=0)
    return [w.numpy() for w in model.weights]


@pytest.mark.slow
@pytest.mark.parametrize(
    "clip",
    [{"global_clipnorm": 1e-3}, {"clipnorm": 1e-3}, {"clipvalue": 1e-3}],
    ids=["global_clipnorm", "clipnorm", "clipvalue"],
)
@pytest.mark.parametrize(
    "name,loss",
    [
        ("sgd", losses.AllNegativesLoss()),
        ("adam", losses.AllNegativesLoss()),
        ("sgd", losses.HingeLoss(max_violation=True)),
    ],
    ids=["sgd-mean", "adam-mean", "sgd-sum"],
)
def test_clipped_steps_on_two_replicas_equal_one_device(
    name, loss, clip, two_replicas
):
    # A clip this small acts on every step: the summed gradient's norm is
    # far above it. Clipping each replica's part instead moves the weights
    # elsewhere (a few % of the update). The value clip is 1e-3, not
    # smaller: a word's rows are summed before it (the dense gradient), and
    # where its occurrences nearly cancel, float32 rounding of a few 1e-8
    # would be more than 1e-4 of a whole run's update at 1e-4.
    settings = {
        "name": name,
        "learning_rate": 0.5 if name == "sgd" else 1e-2,
        "global_clipnorm": None,
        **clip,
    }
    single = tiny_model()
    single(batch()[0])
    start = [w.numpy() for w in single.weights]
    expected = _fit(single, loss, optimizers.make_optimizer(**settings))
    with two_replicas.scope():
        mirrored = tiny_model()
        mirrored(batch()[0])
        mirrored.set_weights(start)
        optimizer = optimizers.make_optimizer(**settings)
    found = _fit(mirrored, loss, optimizer)
    assert_same_training(
        *(
            {str(i): w for i, w in enumerate(weights)}
            for weights in (found, expected, start)
        )
    )


def test_outputs_are_unit_vectors_even_for_an_empty_caption():
    model = tiny_model()
    outputs = model(batch()[0])
    for name in ("image", "text"):
        norms = np.linalg.norm(outputs[name].numpy(), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_learnable_temperature_is_trained_and_clipped():
    model = tiny_model(learnable_temperature=0.1)
    model(batch()[0])
    assert float(model.temperature()) == pytest.approx(0.1)
    one_step(model, losses.AllNegativesLoss(temperature=0.5))
    assert float(model.temperature()) != pytest.approx(0.1)
    model.log_temperature.assign(np.log(1e-5))
    assert float(model.temperature()) == pytest.approx(0.01)


def test_config_round_trip_rebuilds_both_towers():
    model = tiny_model(learnable_temperature=0.07)
    model(batch()[0])
    clone = dual_encoder.DualEncoder.from_config(model.get_config())
    clone(batch()[0])
    clone.set_weights(model.get_weights())
    a, b = model(batch()[0]), clone(batch()[0])
    np.testing.assert_allclose(a["text"], b["text"], atol=1e-6)
    np.testing.assert_allclose(a["image"], b["image"], atol=1e-6)
    assert clone.learnable_temperature == 0.07


def test_xla_compiled_step_takes_the_same_step():
    plain = tiny_model()
    plain(batch()[0])
    start = [w.numpy() for w in plain.weights]
    plain_loss, plain_weights = one_step(plain, losses.AllNegativesLoss())

    compiled = tiny_model()
    compiled(batch()[0])
    compiled.set_weights(start)
    compiled.compile_step(jit_compile=True)
    compiled_loss, compiled_weights = one_step(
        compiled, losses.AllNegativesLoss()
    )

    assert compiled_loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(plain_weights, compiled_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_step_is_finite_and_close_to_float32():
    reference = tiny_model()
    reference(batch()[0])
    start = [w.numpy() for w in reference.weights]
    reference_loss, _ = one_step(reference, losses.AllNegativesLoss())

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = tiny_model()
        outputs = mixed(batch()[0])
        mixed.set_weights(start)
        mixed_loss, mixed_weights = one_step(mixed, losses.AllNegativesLoss())
    finally:
        keras.mixed_precision.set_global_policy("float32")

    assert mixed.image_tower.get_layer("conv0").compute_dtype == "bfloat16"
    # Variables, embeddings and the loss stay float32.
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert outputs["image"].dtype == outputs["text"].dtype == tf.float32
    assert np.isfinite(mixed_loss)
    # bfloat16 keeps 8 bits of mantissa: close, not equal.
    assert mixed_loss == pytest.approx(reference_loss, rel=0.05)
    assert mixed_loss != reference_loss
