"""Two replicas (two logical CPUs) equal one device on the global batch."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_losses import IDS
from tests.test_losses import KINDS
from tests.test_losses import make_loss
from vse_tf import losses


def _split(strategy, array):
    half = len(array) // 2
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            array[
                half * ctx.replica_id_in_sync_group : half
                * (ctx.replica_id_in_sync_group + 1)
            ]
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,projection_heads",
    [*((kind, 1) for kind in KINDS), ("all", 2), ("vse++", 2)],
)
def test_loss_and_gradients_equal_single_device(
    kind, projection_heads, two_replicas
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16)).astype(np.float32)
    y = rng.normal(size=(8, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    ids = IDS.astype(np.float32)
    loss = make_loss(kind)
    loss.projection_heads = projection_heads

    tx, ty = tf.constant(x), tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch([tx, ty])
        expected = loss(ids, {"image": tx, "text": ty})
    expected_gx, expected_gy = tape.gradient(expected, [tx, ty])

    strategy = two_replicas

    @tf.function
    def replica_step(x_local, y_local, ids_local):
        with tf.GradientTape() as tape:
            tape.watch([x_local, y_local])
            value = loss(ids_local, {"image": x_local, "text": y_local})
        return (value,) + tuple(tape.gradient(value, [x_local, y_local]))

    values, gx, gy = strategy.run(
        replica_step,
        args=(_split(strategy, x), _split(strategy, y), _split(strategy, ids)),
    )
    per_replica = strategy.experimental_local_results(values)
    # Keras scales each replica's mean by 1/2: the values add up.
    np.testing.assert_allclose(
        float(sum(per_replica)), float(expected), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        np.concatenate(strategy.experimental_local_results(gx)),
        expected_gx.numpy(),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.concatenate(strategy.experimental_local_results(gy)),
        expected_gy.numpy(),
        atol=1e-6,
    )


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["sum", "sum_over_batch_size"])
def test_uneven_replica_batches_add_up_to_one_device(reduction, two_replicas):
    # 3 pairs on one replica and 2 on the other (an epoch's last batch):
    # the right positives, and a mean over the global batch, not a mean of
    # the replicas' means.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    y = x + 0.1 * rng.normal(size=(5, 8)).astype(np.float32)
    ids = np.arange(5, dtype=np.float32)
    loss = losses.AllNegativesLoss(reduction=reduction)
    expected = float(loss(ids, {"image": x, "text": y}))

    strategy = two_replicas
    bounds = [(0, 3), (3, 5)]

    def piece(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                array[slice(*bounds[ctx.replica_id_in_sync_group])]
            )
        )

    @tf.function
    def replica_step(x_local, y_local, ids_local):
        return loss(ids_local, {"image": x_local, "text": y_local})

    values = strategy.run(replica_step, args=(piece(x), piece(y), piece(ids)))
    total = sum(float(v) for v in strategy.experimental_local_results(values))
    np.testing.assert_allclose(total, expected, rtol=1e-6)
