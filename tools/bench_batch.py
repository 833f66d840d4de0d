"""The training step against the batch size, and the loss's share of it.

    python -m tools.bench_batch --json=batch.json --plot=batch.png
    python -m tools.bench_batch --configs=precomp --batches 64 256 1024

For each config of tools/bench_train.py (precomp: VSE++'s step on
precomputed features, a GRU of 1024, D = 1024, the max of hinges;
f8k_heads: gin/flickr8k.gin's heads on cached features, ConVSE with three
heads) and each batch size: the median step time (as bench_train times
it, the batch in memory), and the time of the loss alone, forward and
gradient with respect to the embeddings the towers gave that batch. The
towers' cost grows as B; the loss scores B x B pairs (B x B x heads), so
its share grows with B: the plot's fitted exponents say how fast.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from tools import bench_train
from tools import curves
from vse_tf import io_utils


def loss_seconds(model, loss, batch, repeats=20):
    """Median seconds of the loss and its gradient on this batch's
    embeddings (held as variables: the towers are not run)."""
    outputs = model(batch[0], training=True)
    embeddings = {
        name: tf.Variable(value)
        for name, value in outputs.items()
        if name in ("image", "text")
    }
    rest = {
        name: value for name, value in outputs.items() if name not in embeddings
    }
    labels = tf.constant(batch[1])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, {**embeddings, **rest})
        return tape.gradient(value, list(embeddings.values()))

    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        [g.numpy() for g in step()]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="precomp,f8k_heads")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024]
    )
    parser.add_argument(
        "--precision", default="float32", help="float32 or mixed_bfloat16"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--plot", help="write the curves here (PNG)")
    args = parser.parse_args()
    machine = bench_train.machine()
    print(machine)
    points = []
    for config in args.configs.split(","):
        for batch in args.batches:
            measured = []
            step = bench_train.time_steps(
                config,
                args.precision,
                False,
                args.steps,
                args.warmup,
                size=batch,
                with_model=lambda *model_loss_batch, into=measured: into.append(
                    loss_seconds(*model_loss_batch)
                ),
            )
            points.append(
                {
                    "config": config,
                    "batch": batch,
                    "step_ms": 1e3 * step,
                    "loss_ms": 1e3 * measured[0],
                    "loss_share": measured[0] / step,
                    "pairs_per_s": batch / step,
                }
            )
            p = points[-1]
            print(
                f"{config:10} B={batch:5}: step {p['step_ms']:8.1f} ms, "
                f"loss {p['loss_ms']:7.2f} ms ({100 * p['loss_share']:.1f}"
                f"%), {p['pairs_per_s']:6.0f} pairs/s",
                flush=True,
            )
    growth, series = {}, {}
    for config in args.configs.split(","):
        mine = [p for p in points if p["config"] == config]
        sizes = [p["batch"] for p in mine]
        for key, label in (("step_ms", "step"), ("loss_ms", "loss")):
            values = [p[key] for p in mine]
            growth[f"{config} {label}"] = curves.slope(sizes, values)
            series[f"{config} {label}"] = (sizes, values)
    print(f"Growth exponents (1 = linear, 2 = quadratic): {growth}")
    figures = {
        "machine": machine,
        "precision": args.precision,
        "points": points,
        "growth": growth,
    }
    if args.json:
        io_utils.write_json_atomic(args.json, figures)
    if args.plot:
        curves.plot(
            args.plot,
            f"Training step and its loss against the "
            f"batch size ({args.precision})",
            "batch size",
            "ms",
            series,
            machine,
        )
        print(f"Wrote {args.plot}")


if __name__ == "__main__":
    main()
