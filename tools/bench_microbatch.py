"""Peak memory and step time against the batch: whole, and in slices
(`train.microbatch_size`, gradient caching).

    python -m tools.bench_microbatch --json=docs/benchmarks/microbatch.json \\
        --plot=docs/benchmarks/microbatch.png
    python -m tools.bench_microbatch --configs=demo --batches 8192 \\
        --microbatch_size=256

For each config of tools/bench_train.py (demo: gin/demo.gin's towers on
64x64 pixels; precomp: VSE++'s step on precomputed features), each batch
and each way (the whole batch at once, or slices of --microbatch_size),
a fresh process builds the model and one batch in memory, then trains
--warmup steps and --steps timed ones. It reports:

  step MB   the peak of the process's own memory (anonymous resident
            pages, sampled every 5 ms) during those steps, above what the
            model, its optimizer and the batch held before them;
  peak MB   the process's peak resident memory, everything included (the
            TensorFlow runtime, the batch itself);
  ms/step   the median step of three runs (bench_train's clock);
  fwd ms    in slices: the median of three runs of the first pass alone
            (both towers over the batch a slice at a time, no tape), the
            price of gradient caching's second forward pass. A sliced step
            slower than the whole one by more than this pays for its
            slices' smaller products.

A fresh process a figure, so that memory one figure freed into the
allocator does not hide the next one's. Float32 unless --precision.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(config, batch, microbatch_size, precision, steps, warmup):
    """One figure, in this process: {"step_mb", "peak_mb", "ms_per_step"}."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tools import bench_train
    from tools import curves

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    model, optimizer, loss = bench_train.CONFIGS[config]()
    data = bench_train.one_batch(config, np.random.default_rng(0), batch)
    model(tf.nest.map_structure(lambda x: x[:2], data[0]))
    model.compile(optimizer=optimizer, loss=loss)
    model.optimizer.build(model.trainable_variables)
    model.compile_step(False, microbatch_size)
    dataset = tf.data.Dataset.from_tensors(data).repeat()
    with curves.PeakMemory() as memory:
        model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
        seconds = bench_train.median_step_seconds(model, dataset, steps)
    with open("/proc/self/status") as f:
        peak_kib = next(int(line.split()[1]) for line in f if "VmHWM" in line)
    return {
        "step_mb": memory.anon_mib * 1.048576,
        "peak_mb": peak_kib * 1.024 / 1000,
        "ms_per_step": 1e3 * seconds,
        "forward_ms": (
            1e3 * forward_seconds(model, data[0], microbatch_size)
            if microbatch_size
            else None
        ),
    }


def forward_seconds(model, inputs, microbatch_size):
    """The median of three runs of gradient caching's first pass: both
    towers over `inputs`, `microbatch_size` pairs at a time, no tape."""
    import tensorflow as tf

    from tools import bench_matmul
    from vse_tf.models import gradient_cache

    pixels = tf.constant(inputs["image"])
    captions = tf.constant(inputs["caption"])
    tokens = model.tokenizer(captions) if model.tokenizer else captions
    first_pass = tf.function(
        lambda: [
            gradient_cache.embed(model.image_tower, pixels, microbatch_size),
            gradient_cache.embed(model.text_encoder, tokens, microbatch_size),
        ]
    )
    return bench_matmul.median_seconds(
        lambda: [embeddings.numpy() for embeddings in first_pass()], 3
    )


def measure_apart(config, batch, microbatch_size, args):
    """`measure` in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "tools.bench_microbatch",
        f"--one={config},{batch},{microbatch_size or 0}",
        f"--precision={args.precision}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"error: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--configs", default="demo,precomp")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[128, 512, 2048, 8192]
    )
    parser.add_argument("--microbatch_size", type=int, default=256)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--plot", help="also write memory and time against the batch (PNG)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one figure, as JSON on the last line
        config, batch, slices = args.one.split(",")
        figure = measure(
            config,
            int(batch),
            int(slices) or None,
            args.precision,
            args.steps,
            args.warmup,
        )
        print(json.dumps(figure))
        return

    from tools import bench_train
    from tools import curves
    from vse_tf import io_utils

    rows = []
    print(
        f"{'config':9}{'batch':>7}{'slices':>8}{'step MB':>10}"
        f"{'peak MB':>10}{'ms/step':>10}{'fwd ms':>9}"
    )
    for config in args.configs.split(","):
        for batch in args.batches:
            ways = [None]
            if args.microbatch_size < batch:
                ways.append(args.microbatch_size)
            for slices in ways:
                row = {
                    "config": config,
                    "batch": batch,
                    "microbatch_size": slices,
                    **measure_apart(config, batch, slices, args),
                }
                rows.append(row)
                print(
                    f"{config:9}{batch:7}{slices or '-':>8}"
                    f"{row['step_mb']:10.0f}{row['peak_mb']:10.0f}"
                    f"{row['ms_per_step']:10.0f}"
                    f"{row['forward_ms'] or 0:9.0f}",
                    flush=True,
                )
    machine = bench_train.machine()
    print(machine)
    for row in rows:
        whole = next(
            r
            for r in rows
            if r["config"] == row["config"]
            and r["batch"] == row["batch"]
            and r["microbatch_size"] is None
        )
        if row["microbatch_size"]:
            print(
                f"{row['config']} batch {row['batch']} in slices of "
                f"{row['microbatch_size']}: step memory "
                f"{row['step_mb'] / whole['step_mb']:.2f}x, peak "
                f"{row['peak_mb'] / whole['peak_mb']:.2f}x, time "
                f"{row['ms_per_step'] / whole['ms_per_step']:.2f}x the whole "
                "batch's (its step and one more forward pass: "
                f"{1 + row['forward_ms'] / whole['ms_per_step']:.2f}x)"
            )
    if args.json:
        io_utils.write_json_atomic(
            args.json,
            {"precision": args.precision, "rows": rows, "machine": machine},
        )
    if args.plot:
        for key, label, suffix in (
            ("step_mb", "step memory above model and batch (MB)", ""),
            ("ms_per_step", "ms per step", "_time"),
        ):
            series = {}
            for row in rows:
                way = (
                    f"slices of {row['microbatch_size']}"
                    if row["microbatch_size"]
                    else "whole batch"
                )
                xs, ys = series.setdefault(f"{row['config']}, {way}", ([], []))
                xs.append(row["batch"])
                ys.append(row[key])
            path = os.path.splitext(args.plot)[0] + suffix + ".png"
            curves.plot(
                path,
                f"Training step against the batch ({args.precision})",
                "global batch (pairs)",
                label,
                series,
                machine,
            )
            print(f"Wrote {path}")


if __name__ == "__main__":
    main()
