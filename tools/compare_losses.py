"""Trains the four objectives on the same data and budget, side by side.

    python tools/compare_losses.py --gin_file=gin/demo.gin --out_dir=runs/losses

Each loss is a separate `python -m vse_tf.train` run (its own gin state and
process) in OUT_DIR/<loss>/; a run that already wrote metrics.json is reused.
Prints a Markdown table of the test metrics and writes it, with the raw
numbers, to OUT_DIR/comparison.md and OUT_DIR/comparison.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

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
    "all_negatives_learned_t": (
        "all negatives, learned t (the demo)",
        ["train.loss = @AllNegativesLoss()",
         "build_dual_encoder.learnable_temperature = 0.1"]),
}
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def train_one(name, args):
    model_dir = os.path.join(args.out_dir, name)
    metrics_path = os.path.join(model_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        bindings = LOSSES[name][1] + [f"train.seed = {args.seed}"] + (
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
    header = "| loss | " + " | ".join(
        c.replace("_r", " R@") for c in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for name, metrics in results.items():
        lines.append(f"| {LOSSES[name][0]} | " + " | ".join(
            f"{metrics[c]:.1f}" for c in COLUMNS) + " |")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES),
                        choices=list(LOSSES))
    args = parser.parse_args()
    args.gin_file = args.gin_file or ["gin/demo.gin"]

    results = {name: train_one(name, args) for name in args.losses}
    table = markdown_table(results)
    print(table)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "comparison.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out_dir, "comparison.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
