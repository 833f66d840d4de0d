"""The optimizers' clip (its hooks: tests/test_compat.py) and the schedule
that spans the run."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.training import optimizers


@pytest.mark.parametrize("clip", [{"global_clipnorm": 1e-2},
                                  {"clipvalue": 1e-3}])
def test_loss_scaling_unscales_before_the_clip(clip):
    # mixed_float16 wraps the optimizer in a LossScaleOptimizer: the clip
    # must see the true gradient, not the one scaled by 2**15.
    gradient = np.array([3.0, -4.0, 0.5], np.float32)

    def step(wrap):
        variable = keras.Variable(np.zeros(3, np.float32))
        optimizer = optimizers.make_optimizer("sgd", learning_rate=1.0,
                                              **{"global_clipnorm": None,
                                                 **clip})
        if wrap:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=2.0 ** 15)
        scale = optimizer.scale_loss(tf.constant(1.0))
        optimizer.apply([tf.constant(gradient) * scale], [variable])
        return variable.numpy()

    plain = step(wrap=False)
    if "global_clipnorm" in clip:
        np.testing.assert_allclose(-plain, gradient / np.linalg.norm(
            gradient) * 1e-2, rtol=1e-6)
    else:
        np.testing.assert_allclose(-plain, np.clip(gradient, -1e-3, 1e-3))
    np.testing.assert_allclose(step(wrap=True), plain, rtol=1e-6)


@pytest.mark.parametrize("total_steps", [6, 1170])
def test_cosine_over_the_run_ends_at_the_run_end(total_steps):
    optimizer = optimizers.make_optimizer(
        learning_rate=optimizers.CosineDecayOverRun(2e-4, alpha=0.1),
        total_steps=total_steps)
    optimizer.build([keras.Variable(0.0)])
    for step in (0, total_steps // 3, total_steps // 2, total_steps,
                 2 * total_steps):
        optimizer.iterations.assign(step)
        done = min(step, total_steps) / total_steps
        expected = 2e-4 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * done)))
        assert float(optimizer.learning_rate) == pytest.approx(
            expected, rel=1e-5)


def test_cosine_over_the_run_outside_training_builds():
    # evaluate and export build the optimizer without a run length.
    optimizer = optimizers.make_optimizer(
        learning_rate=optimizers.CosineDecayOverRun(2e-4))
    optimizer.build([keras.Variable(0.0)])
    assert float(optimizer.learning_rate) == pytest.approx(2e-4)
