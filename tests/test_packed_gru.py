"""The packed GRU equals Keras's GRU: outputs, gradients, weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.models import packed_gru

B, T, F, U = 7, 6, 5, 4


def _pair(seed=0, **kwargs):
    """A Keras GRU with a random bias and a PackedGRU with its weights."""
    keras.utils.set_random_seed(seed)
    reference = keras.layers.GRU(U, **kwargs)
    reference.build((None, T, F))
    reference.cell.bias.assign(
        np.random.default_rng(seed).normal(size=(2, 3 * U)).astype(np.float32)
    )
    packed = packed_gru.PackedGRU(U, **kwargs)
    packed.build((None, T, F))
    packed.set_weights(reference.get_weights())
    return reference, packed


def _inputs(lengths):
    rng = np.random.default_rng(1)
    sequences = tf.constant(rng.normal(size=(len(lengths), T, F)), tf.float32)
    mask = tf.constant(np.arange(T)[None] < np.array(lengths)[:, None])
    return sequences, mask


def _outputs_and_gradients(layer, sequences, mask, mode="eager"):
    weights = np.random.default_rng(2).normal(size=(len(mask), U))

    def run(sequences, mask):
        with tf.GradientTape() as tape:
            tape.watch(sequences)
            output = layer(sequences, mask=mask)
            loss = tf.reduce_sum(output * weights)  # every output counts
        gradients = tape.gradient(loss, [sequences, *layer.trainable_weights])
        return [output] + [tf.convert_to_tensor(g) for g in gradients]

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    return [t.numpy() for t in run(sequences, mask)]


@pytest.mark.parametrize(
    "lengths",
    [
        [6, 1, 3, 6, 2, 4, 5],  # unsorted, from one step to all of them
        [3, 3, 3, 3, 3, 3, 3],  # ties keep their order
        [6, 6, 6, 6, 6, 6, 6],  # no padding at all
    ],
)
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_outputs_and_gradients_equal_keras_gru(lengths, mode):
    reference, packed = _pair()
    sequences, mask = _inputs(lengths)
    assert packed._packable(mask)  # the packed loop is what runs here
    for want, got in zip(
        _outputs_and_gradients(reference, sequences, mask),
        _outputs_and_gradients(packed, sequences, mask, mode),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_padding_never_reaches_the_state():
    # Garbage in the padded steps changes nothing.
    _, packed = _pair()
    sequences, mask = _inputs([6, 1, 3, 6, 2, 4, 5])
    noisy = tf.where(mask[..., None], sequences, 1e3)
    np.testing.assert_array_equal(
        packed(sequences, mask=mask), packed(noisy, mask=mask)
    )


def test_under_xla_it_is_keras_masked_loop():
    # XLA needs static shapes; the layer then runs Keras's own loop, and
    # the compiled step gives the same numbers as the packed one.
    reference, packed = _pair()
    sequences, mask = _inputs([6, 1, 3, 6, 2, 4, 5])
    for want, got in zip(
        _outputs_and_gradients(reference, sequences, mask),
        _outputs_and_gradients(packed, sequences, mask, "xla"),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_bidirectional_packed_gru_equals_keras():
    keras.utils.set_random_seed(0)
    reference = keras.layers.Bidirectional(
        keras.layers.GRU(U), merge_mode="ave"
    )
    packed = keras.layers.Bidirectional(
        packed_gru.PackedGRU(U), merge_mode="ave"
    )
    for layer in (reference, packed):
        layer.build((None, T, F))
    packed.set_weights(reference.get_weights())
    sequences, mask = _inputs([6, 1, 3, 6, 2, 4, 5])
    np.testing.assert_allclose(
        packed(sequences, mask=mask),
        reference(sequences, mask=mask),
        rtol=1e-5,
        atol=1e-6,
    )
