"""Every private API of Keras, keras-hub, gin and TensorFlow that vse_tf
relies on, in one place.

Each has no public equivalent in the versions pyproject.toml pins (see the
note at each). `PRIVATE_APIS` lists them; tests/test_compat.py checks each
one against the installed releases and fails with the line below when a
release renames or drops it, so an upgrade breaks there, not deep inside a
training run.
"""

import gin
import keras
import tensorflow as tf

# (what, how to find it, what breaks without it)
PRIVATE_APIS = (
    (
        "gin.config._REGISTRY",
        lambda: gin.config._REGISTRY,
        "suggestions for a misspelt configurable in gin errors",
    ),
    (
        "keras.Model._maybe_symbolic_build",
        lambda: keras.Model._maybe_symbolic_build,
        "fit() on a DualEncoder under a tf.distribute strategy",
    ),
    (
        "keras.layers.Layer._flatten_layers",
        lambda: keras.layers.Layer._flatten_layers,
        "gradient caching's replay of the random state",
    ),
    (
        "keras.layers.Layer._seed_generators",
        lambda: keras.layers.Dropout(0.5)._seed_generators,
        "gradient caching's replay of the random state",
    ),
    (
        "keras.optimizers.Adam._momentums and _velocities",
        lambda: _adam_slots(),
        "Adam's fused update (modeling.optimizers.FusedAdamUpdate)",
    ),
    (
        "keras.optimizers.Optimizer._get_variable_index",
        lambda: keras.optimizers.Optimizer._get_variable_index,
        "Adam's fused update (modeling.optimizers.FusedAdamUpdate)",
    ),
    (
        "keras.optimizers.Optimizer._clip_gradients",
        lambda: keras.optimizers.Optimizer._clip_gradients,
        "clipping the gradient summed over replicas",
    ),
    (
        "keras.optimizers.Optimizer._all_reduce_sum_gradients",
        lambda: keras.optimizers.Optimizer._all_reduce_sum_gradients,
        "clipping the gradient summed over replicas",
    ),
    (
        "keras.optimizers.Optimizer._var_key",
        lambda: keras.optimizers.Optimizer._var_key,
        "per-variable learning-rate multipliers (fine-tuning)",
    ),
    (
        "keras TFLayer._default_save_signature",
        lambda: _tf_layer()._default_save_signature,
        "exporting a tower holding a model that takes strings (MiniLM)",
    ),
    (
        "keras.layers.GRU.inner_loop",
        lambda: keras.layers.GRU.inner_loop,
        "PackedGRU's loop over the unpadded steps",
    ),
    (
        "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext",
        lambda: _control_flow_util().GraphOrParentsInXlaContext,
        "PackedGRU inside an XLA-compiled step",
    ),
    (
        "keras_hub TransformerEncoder._feedforward_intermediate_dense",
        lambda: _transformer_encoder_attribute(),
        "the exact GELU of Hugging Face BERT checkpoints (MiniLM)",
    ),
)


def gin_configurables():
    """{name: the function or class} of every registered configurable.
    Gin has no public listing of them."""
    return {
        selector.split(".")[-1]: configurable.wrapped
        for selector, configurable in gin.config._REGISTRY.items()
    }


def resource_handle(variable):
    """The resource handle of a Keras variable (its TensorFlow variable's,
    on this device under a strategy), for TensorFlow's fused kernels."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


def _adam_slots():
    adam = keras.optimizers.Adam()
    adam.build([keras.Variable(0.0)])
    return adam._momentums, adam._velocities


def all_layers(model):
    """The model and every layer inside it, nested ones too. Keras lists
    only a model's own layers publicly."""
    return list(model._flatten_layers(include_self=True, recursive=True))


def seed_generators(layer):
    """The `keras.random.SeedGenerator`s a layer draws from (dropout,
    random crops): Keras lists their states among `variables` but not
    which they are."""
    return list(layer._seed_generators)


class BuildOnlyTheOptimizer:
    """A model mixin: once the model is built (called on a batch), `fit`
    builds only its optimizer.

    Keras 3.15 builds a model under a strategy by MEAN-reducing one
    distributed input batch, which fails on string captions. A model that
    uses neither compiled loss nor compiled metrics needs no such build.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.built:
            return super()._maybe_symbolic_build(iterator, data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


class ClipAfterReplicaSum:
    """An optimizer mixin: clips the gradient summed over all replicas, as
    one device would.

    Keras 3 clips (`global_clipnorm`, `clipnorm`, `clipvalue`) each
    replica's partial gradient inside `apply` and sums the replicas only
    after that, so with clipping on, R replicas train something else than
    one device on the same global batch: the norm of a part is not the
    norm of the whole. Here the clip waits for the sum (across the replicas
    of every worker) and then acts on it, so clipping has the same meaning
    whatever the number of replicas. A loss-scale optimizer (mixed_float16)
    unscales before its inner optimizer's `apply`, so the clip sees true
    gradients.

    The clip also sees the dense gradient, as VSE++'s `clip_grad_norm_`
    does: an embedding table's gradient arrives as `tf.IndexedSlices`, one
    row per token occurrence (and per replica), and the rows of one token
    are summed before any norm or value is taken (`sum_repeated_rows`).
    """

    def _clip_gradients(self, grads):
        return grads  # deferred to the summed gradient

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = list(super()._all_reduce_sum_gradients(grads_and_vars))
        clipped = super()._clip_gradients(
            [sum_repeated_rows(grad) for grad, _ in summed]
        )
        return [
            (grad, variable) for grad, (_, variable) in zip(clipped, summed)
        ]


def sum_repeated_rows(gradient):
    """`gradient`, with the rows of an `IndexedSlices` that share an index
    summed into one: the rows of the dense gradient, without writing the
    whole table (the optimizer update runs outside XLA, where `tf.unique`
    works)."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    indices, positions = tf.unique(gradient.indices)
    return tf.IndexedSlices(
        tf.math.unsorted_segment_sum(
            gradient.values, positions, tf.shape(indices)[0]
        ),
        indices,
        gradient.dense_shape,
    )


def reducible_logs(logs):
    """A train or test step's `logs`, in a shape Keras can reduce over the
    workers of a multi-worker run.

    Keras 3.15 reduces a multi-worker run's logs with `strategy.reduce(
    "MEAN", value, axis=0)` (`reduce_per_replica`), which fails on a
    scalar; as [1] vectors they reduce to scalars. Other strategies reduce
    scalars, and take the logs as they are.
    """
    if not isinstance(
        tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy
    ):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class NoDefaultSaveSignature:
    """A model mixin: no default signature when a SavedModel holds it.

    Keras would trace a subclassed model on float32 inputs; one that takes
    strings fails there, and the towers' signatures are the export's own.
    """

    @property
    def _default_save_signature(self):
        return None


def variable_key(optimizer, variable):
    """The optimizer's key of `variable`: one key for a mirrored variable
    and its per-replica components, which `update_step` receives."""
    return optimizer._var_key(variable)


def in_xla_context():
    """Whether the graph being traced is compiled by XLA."""
    return _control_flow_util().GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def use_exact_gelu(transformer_layer, gelu):
    """Sets the feed-forward activation of a keras-hub TransformerEncoder,
    which takes only a name ("gelu", the tanh approximation)."""
    transformer_layer._feedforward_intermediate_dense.activation = gelu


def _tf_layer():
    from keras.src.backend.tensorflow.layer import TFLayer

    return TFLayer


def _control_flow_util():
    from tensorflow.python.ops import control_flow_util

    return control_flow_util


def _transformer_encoder_attribute():
    import keras_hub

    layer = keras_hub.layers.TransformerEncoder(intermediate_dim=4, num_heads=1)
    layer.build((1, 2, 4))
    return layer._feedforward_intermediate_dense
