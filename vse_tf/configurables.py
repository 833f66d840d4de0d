"""Everything gin may name, registered in one place.

Our own factories and losses carry `@gin.configurable`; Keras classes that a
config may reference (learning-rate schedules) are registered here with
`gin.external_configurable`, since gin cannot decorate Keras layers or
models directly.
"""

import gin
import keras

from vse_tf import losses  # noqa: F401
from vse_tf.data import coco  # noqa: F401
from vse_tf.data import karpathy  # noqa: F401
from vse_tf.data import karpathy_tfds  # noqa: F401
from vse_tf.evaluation import hubness  # noqa: F401
from vse_tf.modeling import optimizers  # noqa: F401
from vse_tf.models import backbone_towers  # noqa: F401
from vse_tf.models import dual_encoder  # noqa: F401
from vse_tf.models import efficientnet_towers  # noqa: F401
from vse_tf.models import image_towers  # noqa: F401
from vse_tf.models import pretrained_towers  # noqa: F401
from vse_tf.models import text_towers  # noqa: F401
from vse_tf.training import distribute  # noqa: F401
from vse_tf.training import fine_tuning  # noqa: F401
from vse_tf.training import settings  # noqa: F401

for _schedule in (
    keras.optimizers.schedules.PiecewiseConstantDecay,
    keras.optimizers.schedules.CosineDecay,
    keras.optimizers.schedules.ExponentialDecay,
):
    gin.external_configurable(_schedule, module="keras.optimizers.schedules")
