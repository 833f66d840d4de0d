"""The dual encoder: an image tower and a text tower trained jointly."""

import math
import weakref

import gin
import keras
import tensorflow as tf

from vse_tf import compat
from vse_tf import errors
from vse_tf.models import gradient_cache
from vse_tf.models import image_towers
from vse_tf.models import text_towers
from vse_tf.models import towers


@keras.saving.register_keras_serializable(package="vse_tf")
class DualEncoder(compat.BuildOnlyTheOptimizer, keras.Model):
    """Maps {"image": pixels, "caption": strings} to both embeddings.

    `call` returns {"image": [B, D], "text": [B, D]} (and "temperature" when
    it is learned), the `y_pred` every loss in `vse_tf.losses` takes; the
    targets are the image ids. Compile with one of those losses.

    Args:
      image_tower: a model from pixels to L2-normalized embeddings.
      text_tower: a model from caption strings to L2-normalized embeddings.
      learnable_temperature: None keeps the loss's fixed temperature; a float
        learns it from that start, as log(t) clipped to
        [log(min_temperature), log(max_temperature)].
    """

    def __init__(
        self,
        image_tower,
        text_tower,
        learnable_temperature=None,
        min_temperature=0.01,
        max_temperature=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.learnable_temperature = learnable_temperature
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.log_temperature = None
        if learnable_temperature is not None:
            self.log_temperature = self.add_weight(
                shape=(),
                name="log_temperature",
                initializer=keras.initializers.Constant(
                    math.log(learnable_temperature)
                ),
            )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.xla_step = False
        self.microbatch_size = None

    def compile_step(self, jit_compile, microbatch_size=None):
        """How training runs its step: its numeric part as one XLA program
        or not, and the whole batch at once or `microbatch_size` pairs of
        each replica's batch at a time (`gradient_cache`: the same
        gradients, the memory of one slice).

        Keras's own `compile(jit_compile=True)` would compile the whole step,
        which fails on the text tower's string ops. Here tokenization stays
        outside, and everything from pixels and token ids to the loss and
        its gradients is compiled; the optimizer update is not.

        XLA cannot compile the losses' cross-replica gather over mirrored
        variables, so this needs one replica per process.
        """
        if jit_compile and self.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "jit_compile needs one replica: XLA cannot compile the "
                "cross-replica gather of the losses under "
                f"{type(self.distribute_strategy).__name__}."
            )
        # Training options, not part of the architecture or the config.
        self.xla_step = bool(jit_compile)
        self.microbatch_size = microbatch_size

    def _loss_and_gradients(self, pixels, tokens, image_ids):
        if self.microbatch_size:
            return gradient_cache.loss_and_gradients(
                self, pixels, tokens, image_ids, self.microbatch_size
            )
        with tf.GradientTape() as tape:
            loss, scaled_loss = self.batch_loss(
                self.image_tower(pixels, training=True),
                self.text_encoder(tokens, training=True),
                image_ids,
            )
        return loss, tape.gradient(scaled_loss, self.trainable_weights)

    def batch_loss(self, image_embeddings, text_embeddings, image_ids):
        """(loss, the loss scaled for the optimizer) of a batch's
        embeddings; under a strategy, of this replica's share."""
        outputs = self.loss_outputs(image_embeddings, text_embeddings)
        # A replica's value is scaled by 1/replicas (Keras's reduction),
        # so gradients summed over replicas are the global-batch ones.
        loss = self.loss(image_ids, outputs)
        return loss, self.optimizer.scale_loss(loss)

    def loss_outputs(self, image_embeddings, text_embeddings):
        """The `y_pred` of the loss: both embeddings, and the temperature
        when it is learned."""
        outputs = {"image": image_embeddings, "text": text_embeddings}
        if self.log_temperature is not None:
            outputs["temperature"] = self.temperature()
        return outputs

    def temperature_weights(self):
        """The trainable weights the loss reads itself, not through a
        tower: the learned temperature, if any."""
        if self.log_temperature is None or not self.log_temperature.trainable:
            return []
        return [self.log_temperature]

    @property
    def tokenizer(self):
        """The text tower's string half, or None when it has none."""
        return getattr(self.text_tower, "tokenizer", None)

    @property
    def text_encoder(self):
        """The text tower from token ids (the whole tower if no tokenizer)."""
        if isinstance(self.text_tower, towers.Tower):
            return self.text_tower.encoder()
        return self.text_tower

    def both_towers(self):
        """(image tower, text tower)."""
        return self.image_tower, self.text_tower

    def backbones(self):
        """The towers' pretrained parts (see `towers.Tower`)."""
        return [
            tower.backbone
            for tower in self.both_towers()
            if getattr(tower, "backbone", None) is not None
        ]

    def retrace_step(self):
        """Traces the training step anew at its next call: after a change
        of which weights train (a traced step keeps the list it saw)."""
        _XLA_STEPS.pop(self, None)
        self.make_train_function(force=True)

    def head_model(self):
        """A DualEncoder over the towers' heads, sharing their layers and
        the temperature: it trains on features of frozen backbones (towers of
        `pretrained_towers`), and what it learns is this model's."""
        if len(self.backbones()) < 2:
            raise ValueError(
                "Both towers need a backbone and a head to "
                "train on cached features."
            )
        heads = [tower.head for tower in self.both_towers()]
        view = DualEncoder(*heads, name=f"{self.name}_heads")
        view.learnable_temperature = self.learnable_temperature
        view.log_temperature = self.log_temperature
        return view

    def call(self, inputs, training=False):
        outputs = {
            "image": self.image_tower(inputs["image"], training=training),
            "text": self.text_tower(inputs["caption"], training=training),
        }
        if self.log_temperature is not None:
            outputs["temperature"] = self.temperature()
        return outputs

    def dummy_inputs(self):
        """One all-zero example: calling the model on it creates weights."""

        def zeros(tower):
            spec = tower.inputs[0]
            if spec.dtype == "string":
                return tf.constant([""])
            return tf.zeros([1, *spec.shape[1:]], spec.dtype)

        return {
            "image": zeros(self.image_tower),
            "caption": zeros(self.text_tower),
        }

    def temperature(self):
        return tf.exp(
            tf.clip_by_value(
                self.log_temperature,
                math.log(self.min_temperature),
                math.log(self.max_temperature),
            )
        )

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        inputs, image_ids = data
        # Strings stay out of the compiled part of the step.
        tokens = (
            self.tokenizer(inputs["caption"])
            if self.tokenizer
            else inputs["caption"]
        )
        step = _xla_step(self) if self.xla_step else self._loss_and_gradients
        loss, gradients = step(inputs["image"], tokens, image_ids)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._log(loss)

    def test_step(self, data):
        inputs, image_ids = data
        return self._log(self.loss(image_ids, self(inputs, training=False)))

    def _log(self, loss):
        # The replicas' shares add up to the loss of the whole global batch,
        # the value one device would log on it, whatever the strategy.
        context = tf.distribute.get_replica_context()
        if context is not None:
            loss = context.all_reduce("sum", loss)
        self.loss_tracker.update_state(loss)
        logs = {"loss": self.loss_tracker.result()}
        if self.log_temperature is not None:
            logs["temperature"] = self.temperature()
        return compat.reducible_logs(logs)

    def get_config(self):
        return {
            **super().get_config(),
            "image_tower": keras.layers.serialize(self.image_tower),
            "text_tower": keras.layers.serialize(self.text_tower),
            "learnable_temperature": self.learnable_temperature,
            "min_temperature": self.min_temperature,
            "max_temperature": self.max_temperature,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for tower in ("image_tower", "text_tower"):
            config[tower] = keras.layers.deserialize(config[tower])
        return cls(**config)


# Kept off the model, so that no SavedModel of it tries to save the function.
_XLA_STEPS = weakref.WeakKeyDictionary()


def _xla_step(model):
    if model not in _XLA_STEPS:
        # A weak reference: the cached function must not keep its key alive.
        ref = weakref.ref(model)
        _XLA_STEPS[model] = tf.function(
            lambda *args: ref()._loss_and_gradients(*args), jit_compile=True
        )
    return _XLA_STEPS[model]


@gin.configurable
def build_dual_encoder(
    vocabulary,
    learnable_temperature=None,
    image_tower_fn=image_towers.build_image_tower,
    text_tower_fn=text_towers.build_text_tower,
):
    """Both towers as gin configures them, joined.

    Args:
      vocabulary: the words of the text tower (a pretrained text tower may
        ignore them).
      learnable_temperature: see `DualEncoder`.
      image_tower_fn: factory of the image tower, e.g.
        `@build_efficientnet_tower` in gin.
      text_tower_fn: factory of the text tower, called with the vocabulary,
        e.g. `@build_minilm_tower`.
    """
    errors.check_number(
        "build_dual_encoder.learnable_temperature",
        learnable_temperature,
        minimum=0,
        above=True,
        none=True,
    )
    return DualEncoder(
        image_tower_fn(),
        text_tower_fn(vocabulary),
        learnable_temperature=learnable_temperature,
        name="dual_encoder",
    )
