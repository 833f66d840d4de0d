"""Times the frozen EfficientNet-Lite feature extraction, batch norms kept or
folded into the convolutions.

    python -m tools.bench_backbone                     # Lite0 at 224
    python -m tools.bench_backbone --variant=lite2 --image_size=260

Both forms are built from the same random weights (the timing does not
depend on them, and no weights package is needed), checked to compute the
same features, and timed on the same batches after two warm-up calls.
`--pooled_stages 6 7` adds the mid-level features of gin/flickr8k.gin.

    python -m tools.bench_backbone --curve 1 4 16 64 --json=f.json \
        --plot=features.png

--curve times the folded form as gin/flickr8k.gin extracts features
(Lite0, Lite1 and Lite2 at 224 pixels, stages 5 to 7 pooled beside the
last) per image at each batch size, in float32 and in mixed bfloat16
(the policy set before the network is built, as a run does).
"""

import argparse
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from tools import curves
from tools import machine_info
from vse_tf import io_utils
from vse_tf.pretrained import efficientnet_lite


def folded_copy(model, variant, image_size, pooled_stages):
    """The folded form with the same function as `model` (weights copied and
    each batch norm folded in NumPy: an independent check of the port's)."""
    folded = efficientnet_lite.build_efficientnet_lite(
        variant,
        include_top=False,
        image_size=image_size,
        folded_batch_norm=True,
        pooled_stages=pooled_stages,
    )
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
            f"{prefix}.{bn}" if prefix else bn
        ].get_weights()
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


def curve(args):
    """ms per image of each network, each batch size and precision."""
    points = []
    rng = np.random.default_rng(0)
    for precision in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(precision)
        for variant in ("lite0", "lite1", "lite2"):
            model = efficientnet_lite.build_efficientnet_lite(
                variant,
                include_top=False,
                image_size=224,
                folded_batch_norm=True,
                pooled_stages=(5, 6, 7),
            )
            for batch_size in args.curve:
                batch = tf.constant(
                    rng.uniform(0, 255, (batch_size, 224, 224, 3)), tf.float32
                )
                repeats = max(3, args.repeats * 16 // batch_size)
                seconds = statistics.median(
                    seconds_per_batch(model, batch, repeats) for _ in range(3)
                )
                points.append(
                    {
                        "precision": precision,
                        "variant": variant,
                        "batch": batch_size,
                        "ms_per_image": 1e3 * seconds / batch_size,
                    }
                )
                print(
                    f"{precision:15} {variant} batch {batch_size:4}: "
                    f"{points[-1]['ms_per_image']:6.1f} ms an image",
                    flush=True,
                )
    keras.mixed_precision.set_global_policy("float32")
    series = {}
    for precision in ("float32", "mixed_bfloat16"):
        for variant in ("lite0", "lite1", "lite2"):
            mine = [
                p
                for p in points
                if (p["precision"], p["variant"]) == (precision, variant)
            ]
            series[f"{variant}, {precision}"] = (
                [p["batch"] for p in mine],
                [p["ms_per_image"] for p in mine],
            )
    machine = machine_info.describe()
    if args.json:
        io_utils.write_json_atomic(
            args.json, {"machine": machine, "points": points}
        )
    if args.plot:
        curves.plot(
            args.plot,
            "Frozen EfficientNet-Lite features at 224 pixels, per image",
            "batch size",
            "ms per image",
            series,
            machine,
        )
        print(f"Wrote {args.plot}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant", default="lite0", choices=sorted(efficientnet_lite.VARIANTS)
    )
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pooled_stages", type=int, nargs="*", default=())
    parser.add_argument(
        "--curve",
        type=int,
        nargs="+",
        metavar="BATCH",
        help="time gin/flickr8k.gin's three networks at "
        "these batch sizes, float32 and bfloat16",
    )
    parser.add_argument("--json", help="with --curve: the figures")
    parser.add_argument("--plot", help="with --curve: the PNG")
    args = parser.parse_args()
    if args.curve:
        return curve(args)

    stages = tuple(args.pooled_stages)
    model = efficientnet_lite.build_efficientnet_lite(
        args.variant,
        include_top=False,
        image_size=args.image_size,
        pooled_stages=stages,
    )
    # Batch-norm statistics away from (0, 1), as trained ones are.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.weights[0].shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 2, c),
                ]
            )
    folded = folded_copy(model, args.variant, args.image_size, stages)
    batch = tf.constant(
        rng.uniform(
            0, 255, (args.batch_size, args.image_size, args.image_size, 3)
        ),
        tf.float32,
    )
    difference = np.abs(
        model(batch, training=False).numpy() - folded(batch).numpy()
    ).max()
    print(
        f"EfficientNet-{args.variant.capitalize()} at {args.image_size}, "
        f"batch {args.batch_size}, pooled stages {stages or 'none'}; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
        f"; largest difference of the two forms' features {difference:.1e}"
    )
    kept = seconds_per_batch(model, batch, args.repeats)
    fold = seconds_per_batch(folded, batch, args.repeats)
    print("| form | ms per image | images per second |")
    print("|---|---|---|")
    for name, seconds in (
        ("batch norm kept", kept),
        ("batch norm folded", fold),
    ):
        print(
            f"| {name} | {seconds / args.batch_size * 1e3:.1f} | "
            f"{args.batch_size / seconds:.0f} |"
        )
    print(f"folded is {kept / fold:.2f}x faster")


if __name__ == "__main__":
    main()
