"""The matrix-product floor of this machine, at the shapes that matter.

    python -m tools.bench_matmul --json=matmul.json

Throughput in GFLOP/s (2 m n k flops a product), the median of --repeats
timed runs after one warm-up, for NumPy (its BLAS) and TensorFlow (oneDNN or
Eigen) in float32, and TensorFlow in bfloat16 (the products of
mixed_bfloat16, float32 accumulation inside oneDNN), at:

  square 2048, 4096     what a "peak" figure usually means
  eval chunk            512 images x 1024 @ 1024 x 25,000 captions: one
                        chunk of COCO 5K evaluation (tools/bench_eval.py)
  GRU recurrent         128 x 1024 @ 1024 x 3072: one time step of VSE++'s
                        GRU of 1024, batch 128 (three gates)
  GRU input             1792 x 300 @ 300 x 3072: the input projections of a
                        batch of 128 captions of 14 words in one product

A product with one small side runs far below the square peak, so the floor
of a workload is its own shapes' throughput, not the peak's.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tools import machine_info
from vse_tf import io_utils

SHAPES = {
    "square 2048": (2048, 2048, 2048),
    "square 4096": (4096, 4096, 4096),
    "eval chunk": (512, 1024, 25_000),
    "GRU recurrent": (128, 1024, 3072),
    "GRU input": (1792, 300, 3072),
}


def median_seconds(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(
        f"{'shape (m x k @ k x n)':34}{'NumPy':>10}{'TF':>10}{'TF bf16':>10}"
        "  GFLOP/s"
    )
    for name, (m, k, n) in SHAPES.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ta, tb = tf.constant(a), tf.constant(b)
        product = tf.function(lambda ta=ta, tb=tb: tf.matmul(ta, tb))
        half_a, half_b = tf.cast(ta, tf.bfloat16), tf.cast(tb, tf.bfloat16)
        half = tf.function(lambda a=half_a, b=half_b: tf.matmul(a, b))
        flops = 2.0 * m * n * k
        numpy_rate = flops / median_seconds(
            lambda a=a, b=b: a @ b, args.repeats
        )
        tf_rate = flops / median_seconds(
            lambda product=product: product().numpy(), args.repeats
        )
        bf16_rate = flops / median_seconds(
            lambda half=half: half().numpy(), args.repeats
        )
        rows.append(
            {
                "shape": name,
                "m": m,
                "k": k,
                "n": n,
                "numpy_gflops": numpy_rate / 1e9,
                "tensorflow_gflops": tf_rate / 1e9,
                "tensorflow_bfloat16_gflops": bf16_rate / 1e9,
            }
        )
        print(
            f"{name + f' ({m} x {k} @ {k} x {n})':34}"
            f"{numpy_rate / 1e9:10.1f}{tf_rate / 1e9:10.1f}"
            f"{bf16_rate / 1e9:10.1f}"
        )
    machine = machine_info.describe()
    print(
        f"median of {args.repeats}; {machine}; NumPy {np.__version__}, "
        f"TensorFlow {tf.__version__}"
    )
    if args.json:
        io_utils.write_json_atomic(
            args.json,
            {"machine": machine, "repeats": args.repeats, "rows": rows},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
