"""ConVSE against VSE++ as the global batch grows, on real photos.

    python -m tools.batch_size_study --data_dir=../shared/data \\
        --out_dir=runs/batch_study --batch_sizes 128 512 2048 \\
        --seeds 0 1 2 --plot=docs/batch_size_rsum.png

Every run is one of `tools.compare_losses`'s (its own process) in
OUT_DIR/b<batch>/<row>/seed<k>/: gin/flickr8k.gin's towers with one head a
tower, the paper's fixed temperature, all sharing one folder of cached
features (OUT_DIR/features). A finished run is reused.

The learning-rate rule, fixed before any test figure was read: the gin
file's 2e-4 at its batch of 256, times sqrt(batch / 256) (the square-root
rule for Adam: Malladi et al., "On the SDEs and Scaling Rules for Adaptive
Gradient Algorithms", 2022), over the gin file's 10 epochs at every batch,
so that every run sees the same pairs and a bigger batch takes fewer,
larger steps. Nothing is tuned per batch.

Prints and writes (OUT_DIR/batch_study.md and .json) the test rsum by
plain cosine and with the hubness correction, the mean over seeds and its
range, for each batch and row, and the wall time of each run; with --plot
a PNG of test rsum against the batch.
"""

import argparse
import json
import os
import time
import types

from tools import compare_losses
from tools import curves
from vse_tf import io_utils
from vse_tf.training import run_dir

ROWS = ("all_negatives", "vse_pp")
BASE_BATCH = 256  # gin/flickr8k.gin's train.batch_size


def study_bindings(batch_size, microbatch_size=None):
    """The bindings that make a run of `batch_size` follow the rule."""
    bindings = [
        "HEADS = 1",
        f"train.batch_size = {batch_size}",
        "make_optimizer.scale_learning_rate = 'sqrt'",
        f"make_optimizer.base_batch_size = {BASE_BATCH}",
    ]
    if microbatch_size and microbatch_size < batch_size:
        bindings.append(f"train.microbatch_size = {microbatch_size}")
    return bindings


def run_batch(batch_size, args):
    """{row: [a seed's {"metrics", "seconds" it took, "steps"}]}."""
    runs = types.SimpleNamespace(
        gin_file=args.gin_file,
        gin_bindings=study_bindings(batch_size, args.microbatch_size)
        + args.gin_bindings,
        out_dir=os.path.join(args.out_dir, f"b{batch_size}"),
        feature_dir=os.path.join(args.out_dir, "features"),
        data_dir=args.data_dir,
        stage_epochs=None,
    )
    results = {}
    for row in ROWS:
        results[row] = []
        for seed in args.seeds:
            folder = compare_losses.run_folder(runs, row, seed)
            # The run's wall time, kept beside it for when it is reused.
            timing = os.path.join(folder, "study_seconds.json")
            started = time.time()
            metrics = compare_losses.train_one(row, seed, runs)
            if not os.path.exists(timing):
                io_utils.write_json_atomic(timing, time.time() - started)
            with open(timing) as f:
                seconds = json.load(f)
            info = run_dir.RunDir(folder).read_run_info()
            results[row].append(
                {
                    "metrics": metrics,
                    "seconds": seconds,
                    "steps": info["epochs"] * info["steps_per_epoch"],
                }
            )
    return results


def rsum_stats(runs, corrected):
    """(mean, min, max) of the runs' test rsum."""
    values = [
        run["metrics"]["rsum"]
        if corrected
        else compare_losses.cosine(run["metrics"])["rsum"]
        for run in runs
    ]
    return sum(values) / len(values), min(values), max(values)


def markdown_table(results):
    """Test rsum by batch: each row's mean over seeds (its range), by plain
    cosine and corrected, and ConVSE's lead over VSE++ in the means."""
    lines = [
        "| batch | steps | ConVSE cosine | VSE++ cosine | lead | "
        "ConVSE corrected | VSE++ corrected | lead | minutes a run |",
        "|---:|---:|---|---|---:|---|---|---:|---:|",
    ]
    for batch, rows in results.items():
        cells = [str(batch), str(rows["all_negatives"][0]["steps"])]
        for corrected in (False, True):
            convse, vsepp = (rsum_stats(rows[row], corrected) for row in ROWS)
            cells += [
                *(
                    f"{s[0]:.1f} ({s[1]:.1f} - {s[2]:.1f})"
                    for s in (convse, vsepp)
                ),
                f"{convse[0] - vsepp[0]:+.1f}",
            ]
        timed = sorted(run["seconds"] for runs in rows.values() for run in runs)
        cells.append(f"{timed[len(timed) // 2] / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path):
    """Test rsum against the batch (log scale): a line a row and scoring,
    the mean over seeds, the range shaded."""
    batches = sorted(results)
    figure, axes = curves.pyplot().subplots(figsize=(7, 4.2), dpi=120)
    for row, label in zip(ROWS, ("ConVSE (all negatives)", "VSE++")):
        for corrected, style in ((False, "--"), (True, "-")):
            stats = [rsum_stats(results[b][row], corrected) for b in batches]
            (line,) = axes.plot(
                batches,
                [s[0] for s in stats],
                style,
                marker="o",
                markersize=4,
                color="C0" if row == ROWS[0] else "C1",
                label=f"{label}, {'corrected' if corrected else 'cosine'}",
            )
            axes.fill_between(
                batches,
                [s[1] for s in stats],
                [s[2] for s in stats],
                color=line.get_color(),
                alpha=0.15,
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.set_xlabel("global batch (pairs)")
    axes.set_ylabel("Flickr8k 1K test rsum")
    axes.set_title("Test rsum against the batch, mean and range over seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    curves.save(figure, path)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--gin_file",
        action="append",
        default=None,
        help="default: gin/flickr8k.gin",
    )
    parser.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="extra bindings shared by every run",
    )
    parser.add_argument("--out_dir", default="runs/batch_study")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[128, 512, 2048]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--microbatch_size",
        type=int,
        default=None,
        help="train batches larger than this in slices of it "
        "(train.microbatch_size): the same gradients in less memory",
    )
    parser.add_argument("--plot", default=None, help="also write this PNG")
    args = parser.parse_args()
    args.gin_file = args.gin_file or ["gin/flickr8k.gin"]

    started = time.time()
    results = {batch: run_batch(batch, args) for batch in args.batch_sizes}
    table = markdown_table(results)
    print(table)
    print(f"({time.time() - started:.0f} s in all, reused runs included)")
    io_utils.write_text_atomic(
        os.path.join(args.out_dir, "batch_study.md"), table + "\n"
    )
    io_utils.write_json_atomic(
        os.path.join(args.out_dir, "batch_study.json"),
        {str(batch): rows for batch, rows in results.items()},
    )
    if args.plot:
        plot(results, args.plot)
        print(f"Wrote {args.plot}")


if __name__ == "__main__":
    main()
