"""Trains the four objectives on the same data and budget, side by side.

    python tools/compare_losses.py --gin_file=gin/demo.gin --out_dir=runs/losses
    python tools/compare_losses.py --gin_file=gin/flickr8k.gin \
        --data_dir=../shared/data --seeds 0 1 2 --out_dir=runs/f8k_losses \
        --losses all_negatives hardest_negative vse0 vse_pp

Each (loss, seed) is a separate `python -m vse_tf.train` run (its own gin
state and process) in OUT_DIR/<loss>/seed<k>/; a run that already wrote
metrics.json is reused. Runs on cached backbone features share one feature
folder, OUT_DIR/features. Prints a Markdown table of the test metrics (the
mean over seeds, and the min-max range of rsum), and says which rsum
differences exceed the spread: a difference is claimed only where the two
losses' ranges over seeds do not overlap. Writes it, with the raw numbers,
to OUT_DIR/comparison.md and OUT_DIR/comparison.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from vse_tf import io_utils  # noqa: E402

# The paper's settings (fixed t = 0.1) for all four, and the demo's choice,
# the first loss with a learned temperature. A learned temperature only makes
# sense for the first loss: the others fall as t grows, so they would push
# it to its ceiling.
FIXED = "build_dual_encoder.learnable_temperature = None"
LOSSES = {
    "all_negatives": ("all negatives (ConVSE)",
                      ["train.loss = @AllNegativesLoss()", FIXED]),
    "hardest_negative": ("hardest negative (ConVSE++)",
                         ["train.loss = @HardestNegativeLoss()", FIXED]),
    "vse0": ("VSE0, sum of hinges",
             ["train.loss = @HingeLoss()", "HingeLoss.max_violation = False",
              FIXED]),
    "vse_pp": ("VSE++, max of hinges",
               ["train.loss = @HingeLoss()", "HingeLoss.max_violation = True",
                FIXED]),
    # The gin file's own setting: demo.gin and flickr8k.gin learn t.
    "all_negatives_learned_t": (
        "all negatives, learned t (the gin file's)",
        ["train.loss = @AllNegativesLoss()"]),
}
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def train_one(name, seed, args):
    model_dir = os.path.join(args.out_dir, name, f"seed{seed}")
    metrics_path = os.path.join(model_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        feature_dir = os.path.abspath(os.path.join(args.out_dir, "features"))
        bindings = LOSSES[name][1] + [
            f"train.seed = {seed}", f"train.feature_dir = '{feature_dir}'",
            "train.export = False", "train.projector_images = 0"] + (
                args.gin_bindings)
        command = [sys.executable, "-m", "vse_tf.train",
                   *[f"--gin_file={f}" for f in args.gin_file],
                   *[f"--gin_bindings={b}" for b in bindings],
                   f"--model_dir={model_dir}"]
        if args.data_dir:
            command.append(f"--data_dir={args.data_dir}")
        print(f"== {LOSSES[name][0]}: {' '.join(command)}", flush=True)
        started = time.time()
        subprocess.run(command, check=True,
                       env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1"})
        print(f"== {name} done in {time.time() - started:.0f} s", flush=True)
    with open(metrics_path) as f:
        return json.load(f)


def markdown_table(results):
    """results: {loss: [metrics of each seed]}. Runs scored with a hubness
    correction get a last column, their plain cosine rsum."""
    cosine = all("cosine" in r for runs in results.values() for r in runs)
    header = "| loss | seeds | " + " | ".join(
        c.replace("_r", " R@") for c in COLUMNS) + " | rsum range |" + (
            " cosine rsum |" if cosine else "")
    lines = [header, "|---" * (len(COLUMNS) + 3 + cosine) + "|"]
    for name, runs in results.items():
        mean = {c: sum(r[c] for r in runs) / len(runs) for c in COLUMNS}
        rsums = [r["rsum"] for r in runs]
        lines.append(f"| {LOSSES[name][0]} | {len(runs)} | " + " | ".join(
            f"{mean[c]:.1f}" for c in COLUMNS) +
            f" | {min(rsums):.1f} - {max(rsums):.1f} |" + (
                f" {sum(r['cosine']['rsum'] for r in runs) / len(runs):.1f} |"
                if cosine else ""))
    return "\n".join(lines)


def claims(results):
    """Which rsum differences exceed the spread over seeds."""
    ranges = {name: (min(r["rsum"] for r in runs),
                     max(r["rsum"] for r in runs))
              for name, runs in results.items()}
    names = sorted(ranges, key=lambda n: -sum(ranges[n]))
    lines = []
    for i, better in enumerate(names):
        for worse in names[i + 1:]:
            separated = ranges[better][0] > ranges[worse][1]
            lines.append(
                f"- {LOSSES[better][0]} vs {LOSSES[worse][0]}: "
                + ("better beyond the spread (its worst seed beats the "
                   "other's best)" if separated else
                   "within the spread; no difference claimed"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", action="append", default=None,
                        help="gin config(s) shared by every run "
                        "(default: gin/demo.gin)")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="extra bindings shared by every run")
    parser.add_argument("--out_dir", default="runs/compare_losses")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES),
                        choices=list(LOSSES))
    args = parser.parse_args()
    args.gin_file = args.gin_file or ["gin/demo.gin"]

    results = {name: [train_one(name, seed, args) for seed in args.seeds]
               for name in args.losses}
    table = markdown_table(results)
    if len(args.seeds) > 1:
        table += "\n\n" + claims(results)
    print(table)
    os.makedirs(args.out_dir, exist_ok=True)
    io_utils.write_text_atomic(os.path.join(args.out_dir, "comparison.md"),
                               table + "\n")
    io_utils.write_json_atomic(os.path.join(args.out_dir, "comparison.json"),
                               results)


if __name__ == "__main__":
    main()
