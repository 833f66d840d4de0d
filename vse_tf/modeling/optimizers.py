"""The optimizer a gin file chooses."""

import math

import gin
import keras
import tensorflow as tf

from vse_tf import compat
from vse_tf import errors


class LearningRateMultipliers:
    """Lets chosen variables learn at a multiple of the learning rate.

    Keras 3 optimizers have no parameter groups; this mixin gives each
    variable a factor on the learning rate its update step receives, so a
    pretrained backbone can be fine-tuned at, say, a tenth of the head's
    rate (VSE-infinity) while sharing one optimizer, one schedule and one
    checkpoint with it. AdamW's weight decay keeps the unscaled rate.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate_multipliers = {}

    def multiply_learning_rate(self, variables, factor):
        """From the next traced step on, `variables` learn at `factor` times
        the learning rate."""
        for variable in variables:
            key = compat.variable_key(self, variable)
            self.learning_rate_multipliers[key] = factor

    def update_step(self, gradient, variable, learning_rate):
        factor = self.learning_rate_multipliers.get(
            compat.variable_key(self, variable), 1.0
        )
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)


class FusedAdamUpdate:
    """An Adam mixin: each variable's update as TensorFlow's one fused
    kernel (`ResourceApplyAdam`), which reads the gradient, both moments
    and the variable once and writes them once.

    Keras computes the same update in a dozen element-wise ops, each a
    pass over the parameters: on the 59.5M parameters of gin/flickr8k.gin's
    heads that is 146 ms a step on 2 cores against 42 ms fused
    (BENCHMARKS.md, `tools.bench_optimizer`). The arithmetic is Keras's:
    m and v move toward g and g^2 by (1 - beta), and the variable by
    lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + epsilon); only the
    rounding of the sums differs. An embedding table's gradient is the
    dense table's, its rows summed by index (`compat.sum_repeated_rows`
    has summed them already); Keras's own Adam would square each
    occurrence's row apart. AMSGrad keeps Keras's update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=compat.resource_handle(variable),
            m=compat.resource_handle(self._momentums[index]),
            v=compat.resource_handle(self._velocities[index]),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
        )


@keras.saving.register_keras_serializable(package="vse_tf")
class Adam(
    compat.ClipAfterReplicaSum,
    LearningRateMultipliers,
    FusedAdamUpdate,
    keras.optimizers.Adam,
):
    pass


@keras.saving.register_keras_serializable(package="vse_tf")
class AdamW(
    compat.ClipAfterReplicaSum,
    LearningRateMultipliers,
    FusedAdamUpdate,
    keras.optimizers.AdamW,
):
    pass


@keras.saving.register_keras_serializable(package="vse_tf")
class SGD(
    compat.ClipAfterReplicaSum, LearningRateMultipliers, keras.optimizers.SGD
):
    pass


OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def multiply_learning_rate(optimizer, variables, factor):
    """`LearningRateMultipliers.multiply_learning_rate` on `optimizer`, or
    on the optimizer inside it when Keras wrapped it in a
    `LossScaleOptimizer` (mixed_float16): that one applies the unscaled
    gradients through its inner optimizer's update step."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.multiply_learning_rate(variables, factor)


SCALINGS = {
    None: lambda ratio: 1.0,
    "linear": lambda ratio: ratio,
    "sqrt": math.sqrt,
}


@keras.saving.register_keras_serializable(package="vse_tf")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule multiplied by a constant."""

    def __init__(self, schedule, factor):
        self.schedule = schedule
        self.factor = factor

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "factor": self.factor,
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            keras.optimizers.schedules.deserialize(config["schedule"]),
            config["factor"],
        )


@gin.configurable
class CosineDecayOverRun:
    """Keras's `CosineDecay` over the whole run, however long it is.

    Keras's schedule is counted in steps, so a config that sets it must
    redo the sum (epochs x steps per epoch) whenever the epochs, the batch
    or the data change, and a run of other length silently ends off the
    curve's end or stops half way down it. This one takes its length from
    the run: the trainer passes `epochs * steps_per_epoch` to
    `make_optimizer`, which builds the Keras schedule. A run that trains
    stage by stage (a warm start) gets a whole cosine for each stage.
    """

    def __init__(self, initial_learning_rate=2e-4, alpha=0.0):
        errors.check_number(
            "CosineDecayOverRun.initial_learning_rate",
            initial_learning_rate,
            minimum=0,
        )
        errors.check_number(
            "CosineDecayOverRun.alpha", alpha, minimum=0, maximum=1
        )
        self.initial_learning_rate = initial_learning_rate
        self.alpha = alpha

    def schedule(self, total_steps):
        # Outside training (evaluate, export) nothing steps the optimizer.
        return keras.optimizers.schedules.CosineDecay(
            self.initial_learning_rate,
            max(total_steps or 1, 1),
            alpha=self.alpha,
        )


def check_one_clip(**settings):
    """A UserError naming both when two of `global_clipnorm`, `clipnorm`
    and `clipvalue` are set: an optimizer clips one way."""
    clips = [
        f"make_optimizer.{name}"
        for name in ("global_clipnorm", "clipnorm", "clipvalue")
        if settings.get(name) is not None
    ]
    if len(clips) > 1:
        values = " and ".join(
            f"{clip} = {settings[clip.split('.')[1]]!r}" for clip in clips
        )
        raise errors.UserError(
            f"{values} are both set, but an optimizer clips one way. Keep "
            f"one and bind the other to None (e.g. --gin_bindings="
            f"'{clips[0]} = None').",
            parameters=clips,
        )


@gin.configurable
def make_optimizer(
    name="adam",
    learning_rate=2e-4,
    global_clipnorm=2.0,
    scale_learning_rate=None,
    base_batch_size=128,
    global_batch_size=None,
    total_steps=None,
    **kwargs,
):
    """An optimizer from `OPTIMIZERS`.

    Args:
      name: "adam" (VSE++ and the paper), "adamw" or "sgd".
      learning_rate: a float, a `keras.optimizers.schedules` schedule
        (bind one in gin, e.g.
        `@keras.optimizers.schedules.PiecewiseConstantDecay()`), or a
        `CosineDecayOverRun`, whose length is `total_steps`.
      global_clipnorm: clip the gradient's global norm (VSE++: 2.0); None
        disables clipping.
      scale_learning_rate: None keeps `learning_rate` whatever the batch;
        "linear" multiplies it by global_batch_size / base_batch_size (Goyal
        et al., 2017, for SGD), "sqrt" by the square root of that ratio
        (the usual rule for Adam). For growing the batch with the number of
        replicas while keeping a tuned learning rate.
      base_batch_size: the global batch `learning_rate` was tuned for.
      global_batch_size: the run's global batch (the trainer passes it).
      total_steps: the run's steps, epochs x steps per epoch (the trainer
        passes it).
      **kwargs: passed on to the optimizer.
    """
    if isinstance(learning_rate, CosineDecayOverRun):
        learning_rate = learning_rate.schedule(total_steps)
    errors.check_choice("make_optimizer.name", name, sorted(OPTIMIZERS))
    errors.check_choice(
        "make_optimizer.scale_learning_rate",
        scale_learning_rate,
        list(SCALINGS),
    )
    if not callable(learning_rate):  # a schedule is checked by Keras
        errors.check_number(
            "make_optimizer.learning_rate", learning_rate, minimum=0
        )
    errors.check_number(
        "make_optimizer.global_clipnorm",
        global_clipnorm,
        minimum=0,
        above=True,
        none=True,
    )
    for clip in ("clipnorm", "clipvalue"):
        errors.check_number(
            f"make_optimizer.{clip}",
            kwargs.get(clip),
            minimum=0,
            above=True,
            none=True,
        )
    check_one_clip(global_clipnorm=global_clipnorm, **kwargs)
    errors.check_number(
        "make_optimizer.base_batch_size",
        base_batch_size,
        minimum=1,
        integer=True,
    )
    if scale_learning_rate and global_batch_size:
        factor = SCALINGS[scale_learning_rate](
            global_batch_size / base_batch_size
        )
        if callable(learning_rate):
            learning_rate = ScaledSchedule(learning_rate, factor)
        else:
            learning_rate = learning_rate * factor
    return OPTIMIZERS[name](
        learning_rate=learning_rate, global_clipnorm=global_clipnorm, **kwargs
    )
