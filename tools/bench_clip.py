"""What clipping a word-embedding gradient by its dense norm costs.

    python -m tools.bench_clip --json=clip.json

A Keras `Embedding`'s gradient is `tf.IndexedSlices`, one row per token
occurrence. VSE++ clips the dense gradient, so vse_tf sums the rows of one
word first (`compat.sum_repeated_rows`: `tf.unique` and a segment sum over
the occurrences). The other way to the dense norm writes the whole table.
Timed here at the VSE++ precomputed-feature shape (a batch of 128 captions
of 8 to 20 tokens into a 10,000 x 300 table), each way a `tf.function`
that also takes the global norm and clips, median of --repeats runs of
--steps calls.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tools import machine_info
from vse_tf import compat


def occurrences(rng, vocabulary, dim, captions):
    lengths = rng.integers(8, 21, size=captions)
    tokens = rng.integers(0, vocabulary, size=int(lengths.sum()))
    return tf.IndexedSlices(
        tf.constant(rng.normal(size=(len(tokens), dim)).astype(np.float32)),
        tf.constant(tokens, tf.int32),
        tf.constant([vocabulary, dim]),
    )


def clipped(gradient):
    """The clip at 2.0 by the norm of what `gradient` holds."""
    values = (
        gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient
    )
    return values * tf.minimum(1.0, 2.0 / tf.norm(values))


WAYS = {
    "occurrences (Keras's own clip, not VSE++'s)": clipped,
    "rows of one word summed (vse_tf)": lambda g: clipped(
        compat.sum_repeated_rows(g)
    ),
    "dense table": lambda g: clipped(tf.convert_to_tensor(g)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--captions", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    gradient = occurrences(
        np.random.default_rng(0), args.vocabulary, args.dim, args.captions
    )
    figures = {
        "machine": machine_info.describe(),
        "occurrences": int(gradient.indices.shape[0]),
        "table": [args.vocabulary, args.dim],
        "ms": {},
    }
    for name, way in WAYS.items():
        function = tf.function(way)
        function(gradient)  # traced
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for _ in range(args.steps):
                function(gradient)
            runs.append((time.perf_counter() - started) / args.steps)
        figures["ms"][name] = 1e3 * statistics.median(runs)
    print(
        f"{figures['machine']}\n{figures['occurrences']} occurrences "
        f"into a {args.vocabulary:,} x {args.dim} table:"
    )
    for name, ms in figures["ms"].items():
        print(f"  {name:<45} {ms:8.3f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
