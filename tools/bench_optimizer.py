"""Adam's update of a model's parameters: Keras's own against the fused
kernel vse_tf's Adam runs (`optimizers.FusedAdamUpdate`).

    python -m tools.bench_optimizer                   # gin/flickr8k.gin's heads
    python -m tools.bench_optimizer --configs=precomp --json=adam.json

For each config of tools/bench_train.py, the trainable variables of its
model and one random gradient for each: the median time of `apply` under
`tf.function`, the two optimizers taking turns, --repeats each. This is the
part of a training step that does not depend on the batch.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tools import bench_train
from vse_tf import io_utils
from vse_tf.modeling import optimizers


def applying(optimizer, variables, gradients):
    optimizer.build(variables)

    @tf.function
    def apply():
        optimizer.apply(gradients, variables)

    return apply


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="f8k_heads,precomp")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    rows = []
    for config in args.configs.split(","):
        keras.utils.set_random_seed(0)
        model, _, _ = bench_train.CONFIGS[config]()
        model(bench_train.one_batch(config, np.random.default_rng(0), 2)[0])
        variables = model.trainable_variables
        rng = np.random.default_rng(1)
        gradients = [
            tf.constant(rng.standard_normal(v.shape).astype(np.float32))
            for v in variables
        ]
        ways = {
            "keras": applying(
                keras.optimizers.Adam(2e-4), variables, gradients
            ),
            "fused": applying(
                optimizers.make_optimizer("adam", global_clipnorm=None),
                variables,
                gradients,
            ),
        }
        times = {name: [] for name in ways}
        for apply in ways.values():
            apply()  # traced
        for _ in range(args.repeats):
            for name, apply in ways.items():
                started = time.perf_counter()
                apply()
                times[name].append(time.perf_counter() - started)
        parameters = sum(int(np.prod(v.shape)) for v in variables)
        row = {
            "config": config,
            "parameters": parameters,
            **{
                f"{name}_ms": 1e3 * statistics.median(values)
                for name, values in times.items()
            },
        }
        rows.append(row)
        print(
            f"{config}: {parameters / 1e6:.1f}M parameters, Keras's Adam "
            f"{row['keras_ms']:.0f} ms, fused {row['fused_ms']:.0f} ms "
            f"({row['keras_ms'] / row['fused_ms']:.1f}x)",
            flush=True,
        )
    machine = bench_train.machine()
    print(machine)
    if args.json:
        io_utils.write_json_atomic(
            args.json, {"rows": rows, "machine": machine}
        )


if __name__ == "__main__":
    main()
