"""Canaries: every private API in `vse_tf.compat` still exists in the
installed Keras, keras-hub, gin and TensorFlow.

A release that renames one fails here with the API's name and what it
serves, instead of a run going wrong (clipping per replica again, say)
without a word.
"""

import inspect

import keras
import pytest

from vse_tf import compat


@pytest.mark.parametrize(
    "name,find,serves",
    compat.PRIVATE_APIS,
    ids=[api[0] for api in compat.PRIVATE_APIS],
)
def test_private_api_still_exists(name, find, serves):
    try:
        found = find()
    except (AttributeError, ImportError) as error:
        pytest.fail(
            f"{name} is gone ({error}); vse_tf.compat needs a port "
            f"for: {serves}."
        )
    assert found is not None, f"{name} is None; needed for: {serves}."


def test_overridden_hooks_keep_their_signatures():
    # The mixins override these by name and call the originals with these
    # arguments.
    expected = {
        keras.Model._maybe_symbolic_build: ["self", "iterator", "data_batch"],
        keras.optimizers.Optimizer._clip_gradients: ["self", "grads"],
        keras.optimizers.Optimizer._all_reduce_sum_gradients: [
            "self",
            "grads_and_vars",
        ],
        keras.optimizers.Optimizer._var_key: ["self", "variable"],
    }
    for method, parameters in expected.items():
        assert list(inspect.signature(method).parameters) == parameters, (
            f"{method.__qualname__} now takes "
            f"{list(inspect.signature(method).parameters)}; "
            "vse_tf.compat's override needs porting."
        )


def test_gin_configurables_lists_registered_functions():
    import gin

    @gin.configurable("compat_probe_fn")
    def probe(alpha=1):
        return alpha

    try:
        assert compat.gin_configurables()["compat_probe_fn"] is not None
        assert (
            "alpha"
            in inspect.signature(
                compat.gin_configurables()["compat_probe_fn"]
            ).parameters
        )
    finally:
        gin.clear_config()


def test_exact_gelu_reaches_the_feed_forward_layer():
    import keras_hub

    layer = keras_hub.layers.TransformerEncoder(intermediate_dim=4, num_heads=1)
    layer.build((1, 2, 4))

    def marker(x):
        return keras.activations.gelu(x, approximate=False)

    compat.use_exact_gelu(layer, marker)
    assert layer._feedforward_intermediate_dense.activation is marker


def test_keras_clips_then_sums_in_every_apply():
    # ClipAfterReplicaSum defers the clip from `_clip_gradients` to
    # `_all_reduce_sum_gradients`: that needs Keras to call both, in this
    # order, once a step, with or without a strategy (the behaviour with
    # replicas and loss scaling: tests/test_optimizers.py).
    import tensorflow as tf

    calls = []

    class Spy(keras.optimizers.SGD):
        def _clip_gradients(self, grads):
            calls.append("clip")
            return super()._clip_gradients(grads)

        def _all_reduce_sum_gradients(self, grads_and_vars):
            calls.append("sum")
            return super()._all_reduce_sum_gradients(grads_and_vars)

    variable = keras.Variable([1.0])
    Spy(learning_rate=0.1, global_clipnorm=1.0).apply(
        [tf.constant([3.0])], [variable]
    )
    assert calls == ["clip", "sum"], (
        f"Keras now calls {calls}; vse_tf.compat.ClipAfterReplicaSum "
        "needs porting."
    )


def test_keras_still_reduces_multi_worker_logs_along_axis_0():
    # Why compat.reducible_logs reshapes: Keras reduces a multi-worker
    # run's logs with a MEAN along axis 0, which a scalar does not have.
    # When Keras stops doing so, the reshape can go.
    from keras.src.backend.tensorflow import trainer

    source = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source, (
        "Keras reduces multi-worker logs another way now; check whether "
        "vse_tf.compat.reducible_logs is still needed."
    )
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="Invalid reduction dimension"):
        strategy.reduce("MEAN", tf.constant(2.0), axis=0)
    assert float(strategy.reduce("MEAN", tf.constant([2.0]), axis=0)) == 2.0


def test_reducible_logs_reshape_only_under_multi_worker():
    import tensorflow as tf

    logs = {"loss": tf.constant(1.5)}
    assert compat.reducible_logs(logs) is logs  # the default strategy
