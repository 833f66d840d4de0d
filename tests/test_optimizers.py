"""The optimizers' clip (its hooks: tests/test_compat.py) and the schedule
that spans the run."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.modeling import optimizers


@pytest.mark.parametrize(
    "clip", [{"global_clipnorm": 1e-2}, {"clipvalue": 1e-3}]
)
def test_loss_scaling_unscales_before_the_clip(clip):
    # mixed_float16 wraps the optimizer in a LossScaleOptimizer: the clip
    # must see the true gradient, not the one scaled by 2**15.
    gradient = np.array([3.0, -4.0, 0.5], np.float32)

    def step(wrap):
        variable = keras.Variable(np.zeros(3, np.float32))
        optimizer = optimizers.make_optimizer(
            "sgd", learning_rate=1.0, **{"global_clipnorm": None, **clip}
        )
        if wrap:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=2.0**15
            )
        scale = optimizer.scale_loss(tf.constant(1.0))
        optimizer.apply([tf.constant(gradient) * scale], [variable])
        return variable.numpy()

    plain = step(wrap=False)
    if "global_clipnorm" in clip:
        np.testing.assert_allclose(
            -plain, gradient / np.linalg.norm(gradient) * 1e-2, rtol=1e-6
        )
    else:
        np.testing.assert_allclose(-plain, np.clip(gradient, -1e-3, 1e-3))
    np.testing.assert_allclose(step(wrap=True), plain, rtol=1e-6)


@pytest.mark.parametrize("total_steps", [6, 1170])
def test_cosine_over_the_run_ends_at_the_run_end(total_steps):
    optimizer = optimizers.make_optimizer(
        learning_rate=optimizers.CosineDecayOverRun(2e-4, alpha=0.1),
        total_steps=total_steps,
    )
    optimizer.build([keras.Variable(0.0)])
    for step in (
        0,
        total_steps // 3,
        total_steps // 2,
        total_steps,
        2 * total_steps,
    ):
        optimizer.iterations.assign(step)
        done = min(step, total_steps) / total_steps
        expected = 2e-4 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * done)))
        assert float(optimizer.learning_rate) == pytest.approx(
            expected, rel=1e-5
        )


def test_cosine_over_the_run_outside_training_builds():
    # evaluate and export build the optimizer without a run length.
    optimizer = optimizers.make_optimizer(
        learning_rate=optimizers.CosineDecayOverRun(2e-4)
    )
    optimizer.build([keras.Variable(0.0)])
    assert float(optimizer.learning_rate) == pytest.approx(2e-4)


# An embedding table's gradient arrives as IndexedSlices, one row per token
# occurrence: tokens 1 and 4 repeat, token 1 on both replicas.
TOKENS = np.array([1, 4, 1, 1, 7, 4])
ROWS = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)


def _dense_clipped_step(table, clip):
    """NumPy: one SGD step (rate 1) on sum(ROWS * table[TOKENS]), its dense
    gradient clipped as `clip` says (VSE++'s clip_grad_norm_)."""
    gradient = np.zeros_like(table)
    np.add.at(gradient, TOKENS, ROWS)
    ((kind, bound),) = clip.items()
    if kind == "clipvalue":
        gradient = np.clip(gradient, -bound, bound)
    else:  # one variable: its norm is the global norm
        gradient *= min(1.0, bound / np.linalg.norm(gradient))
    return table - gradient


@pytest.mark.parametrize(
    "loss_scale", [None, 2.0**10], ids=["unscaled", "loss-scaled"]
)
@pytest.mark.parametrize("replicas", [1, 2], ids=["1-replica", "2-replicas"])
@pytest.mark.parametrize(
    "clip",
    [{"global_clipnorm": 2.0}, {"clipnorm": 2.0}, {"clipvalue": 0.5}],
    ids=["global_clipnorm", "clipnorm", "clipvalue"],
)
def test_an_embedding_gradient_is_clipped_by_its_dense_rows(
    clip, replicas, loss_scale, two_replicas
):
    # Through Keras's own apply: the replicas' sum, then the rows of one
    # token summed, then the clip; under a LossScaleOptimizer
    # (mixed_float16) too, which unscales before all of it.
    strategy = two_replicas if replicas == 2 else tf.distribute.get_strategy()
    with strategy.scope():
        embedding = keras.layers.Embedding(10, 3)
        embedding.build()
        optimizer = optimizers.make_optimizer(
            "sgd", learning_rate=1.0, **{"global_clipnorm": None, **clip}
        )
        if loss_scale:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=loss_scale
            )
        optimizer.build(embedding.trainable_variables)
    table = embedding.embeddings.numpy()
    part = len(TOKENS) // replicas

    def replica_step(tokens, rows):
        with tf.GradientTape() as tape:
            loss = optimizer.scale_loss(tf.reduce_sum(rows * embedding(tokens)))
        gradients = tape.gradient(loss, embedding.trainable_variables)
        assert isinstance(gradients[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(gradients, embedding.trainable_variables))

    def parts(array):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(
                array[
                    part * context.replica_id_in_sync_group : part
                    * (context.replica_id_in_sync_group + 1)
                ]
            )
        )

    tf.function(
        lambda: strategy.run(replica_step, args=(parts(TOKENS), parts(ROWS)))
    )()
    expected = _dense_clipped_step(table, clip)
    np.testing.assert_allclose(
        embedding.embeddings.numpy(), expected, rtol=1e-5, atol=1e-6
    )
    # The clip acted, and on the dense gradient: Keras's own, on the
    # occurrences' rows, gives another step.
    ((kind, bound),) = clip.items()
    occurrences = (
        np.clip(ROWS, -bound, bound)
        if kind == "clipvalue"
        else ROWS * min(1.0, bound / np.linalg.norm(ROWS))
    )
    per_occurrence = table.copy()
    np.add.at(per_occurrence, TOKENS, -occurrences)
    assert np.abs(per_occurrence - expected).max() > 1e-2


def _applying(optimizer, variables, densify):
    """A step applying an embedding table's rows (one row twice), or the
    dense table they sum to, and a dense gradient."""

    @tf.function
    def step(rows, dense):
        table = tf.IndexedSlices(rows, tf.constant([0, 2, 0]), [6, 3])
        if densify:
            table = tf.convert_to_tensor(table)
        optimizer.apply([table, dense], variables)

    return step


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_the_fused_adam_update_is_keras_adam(name):
    # TensorFlow's one-kernel update against Keras's own, over steps of a
    # dense gradient and of an embedding table's rows (one row twice),
    # which the update sums into the dense table's gradient (as PyTorch's
    # dense nn.Embedding gradient, VSE++'s, does; Keras's own Adam squares
    # each occurrence's row apart).
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(6, 3)), rng.normal(size=(4,))]
    gradients = [
        (rng.normal(size=(3, 3)), rng.normal(size=(4,))) for _ in range(4)
    ]
    settings = {"learning_rate": 1e-2}
    if name == "adamw":
        settings["weight_decay"] = 0.1
    stock = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}
    results = []
    for optimizer in (
        stock[name](**settings),
        optimizers.make_optimizer(name, global_clipnorm=None, **settings),
    ):
        variables = [keras.Variable(v.astype(np.float32)) for v in start]
        optimizer.build(variables)

        step = _applying(optimizer, variables, densify=not results)
        for rows, dense in gradients:
            step(tf.constant(rows, tf.float32), tf.constant(dense, tf.float32))
        results.append([v.numpy() for v in variables])
        kernels = {
            op.type
            for op in step.get_concrete_function(
                tf.TensorSpec([3, 3]), tf.TensorSpec([4])
            ).graph.get_operations()
        }
    assert "ResourceApplyAdam" in kernels  # the fused one ran
    for found, expected in zip(results[1], results[0]):
        np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-7)
