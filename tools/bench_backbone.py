"""Times the frozen EfficientNet-Lite feature extraction, batch norms kept or
folded into the convolutions.

    python tools/bench_backbone.py                     # Lite0 at 224
    python tools/bench_backbone.py --variant=lite2 --image_size=260

Both forms are built from the same random weights (the timing does not
depend on them, and no weights package is needed), checked to compute the
same features, and timed on the same batches after two warm-up calls.
`--pooled_stages 6 7` adds the mid-level features of gin/flickr8k.gin.
"""

import argparse
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from vse_tf.pretrained import efficientnet_lite  # noqa: E402


def folded_copy(model, variant, image_size, pooled_stages):
    """The folded form with the same function as `model` (weights copied and
    each batch norm folded in NumPy: an independent check of the port's)."""
    folded = efficientnet_lite.build_efficientnet_lite(
        variant, include_top=False, image_size=image_size,
        folded_batch_norm=True, pooled_stages=pooled_stages)
    layers = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        if not layer.weights:
            continue
        if layer.name.split(".")[-1] not in efficientnet_lite._BATCH_NORM_OF:
            layer.set_weights(layers[layer.name].get_weights())
            continue
        prefix, _, conv = layer.name.rpartition(".")
        bn = efficientnet_lite._BATCH_NORM_OF[conv]
        gamma, beta, mean, var = layers[
            f"{prefix}.{bn}" if prefix else bn].get_weights()
        scale = gamma / np.sqrt(var + efficientnet_lite.BN_EPSILON)
        (kernel,) = layers[layer.name].get_weights()
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        kernel = kernel * (scale[:, None] if depthwise else scale)
        layer.set_weights([kernel, beta - mean * scale])
    return folded


def seconds_per_batch(model, batch, repeats):
    run = tf.function(lambda x: model(x, training=False))
    run(batch), run(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch).numpy()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="lite0",
                        choices=sorted(efficientnet_lite.VARIANTS))
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pooled_stages", type=int, nargs="*", default=())
    args = parser.parse_args()

    stages = tuple(args.pooled_stages)
    model = efficientnet_lite.build_efficientnet_lite(
        args.variant, include_top=False, image_size=args.image_size,
        pooled_stages=stages)
    # Batch-norm statistics away from (0, 1), as trained ones are.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, .1, c),
                               rng.normal(0, .1, c), rng.uniform(.5, 2, c)])
    folded = folded_copy(model, args.variant, args.image_size, stages)
    batch = tf.constant(rng.uniform(0, 255, (args.batch_size, args.image_size,
                                             args.image_size, 3)), tf.float32)
    difference = np.abs(model(batch, training=False).numpy() -
                        folded(batch).numpy()).max()
    print(f"EfficientNet-{args.variant.capitalize()} at {args.image_size}, "
          f"batch {args.batch_size}, pooled stages {stages or 'none'}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
          f"; largest difference of the two forms' features {difference:.1e}")
    kept = seconds_per_batch(model, batch, args.repeats)
    fold = seconds_per_batch(folded, batch, args.repeats)
    print("| form | ms per image | images per second |")
    print("|---|---|---|")
    for name, seconds in (("batch norm kept", kept), ("batch norm folded",
                                                     fold)):
        print(f"| {name} | {seconds / args.batch_size * 1e3:.1f} | "
              f"{args.batch_size / seconds:.0f} |")
    print(f"folded is {kept / fold:.2f}x faster")


if __name__ == "__main__":
    main()
