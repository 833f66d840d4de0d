"""The optimizer a gin file chooses."""

import gin
import keras

OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD}


@gin.configurable
def make_optimizer(name="adam", learning_rate=2e-4, global_clipnorm=2.0,
                   **kwargs):
    """An optimizer from `OPTIMIZERS`.

    Args:
      name: "adam" (VSE++ and the paper), "adamw" or "sgd".
      learning_rate: a float or a `keras.optimizers.schedules` schedule
        (bind one in gin: `@keras.optimizers.schedules.PiecewiseConstantDecay()`).
      global_clipnorm: clip the gradient's global norm (VSE++: 2.0); None
        disables clipping.
      **kwargs: passed on to the optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of "
                         f"{sorted(OPTIMIZERS)}.")
    return OPTIMIZERS[name](learning_rate=learning_rate,
                            global_clipnorm=global_clipnorm, **kwargs)
