"""Trains the objectives on the same data and budget, side by side.

    python -m tools.compare_losses --gin_file=gin/demo.gin --out_dir=runs/losses
    python -m tools.compare_losses --gin_file=gin/flickr8k.gin \\
        --data_dir=../shared/data --seeds 0 1 2 --out_dir=runs/f8k_losses \\
        --gin_bindings='HEADS = 1' --stage_epochs=5 \\
        --plot=docs/flickr8k_val_rsum.png --rows vse_pp_base \\
        hardest_negative_from_base vse_pp_continued all_negatives vse0 \\
        hardest_negative

Each (row, seed) is a separate `python -m vse_tf.train` run (its own gin
state and process) in OUT_DIR/<row>/seed<k>/; a run that already wrote
metrics.json with the expected epochs is reused. Runs on cached backbone
features share one feature folder, OUT_DIR/features.

With --stage_epochs=E the rows follow the paper's protocol: its ConVSE++
starts from a trained VSE++ "base embedding". The base trains E epochs;
the two-stage rows warm-start from it (`train.init_from`, the same seed's
base) for E more; the rows from scratch train 2E, so every row but the
base has the same total. Without it, each run trains the gin file's
epochs and the two-stage rows are not available.

Prints a Markdown table of the test metrics by plain cosine (the paper's
scoring; the mean over seeds and the min-max range of rsum) with the
hubness-corrected rsum beside it where the runs have one, and says which
rsum differences exceed the spread: a difference is claimed only where the
two rows' ranges over seeds do not overlap. Writes it, with the raw numbers
and each run's validation rsum by epoch, to OUT_DIR/comparison.md and
OUT_DIR/comparison.json, and with --plot a PNG of validation rsum by epoch
(the mean over seeds, the range shaded).
"""

import argparse
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import time

import tools.curves
from vse_tf import io_utils
from vse_tf.training import run_dir


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    bindings: tuple
    stages: int = 2  # its epochs, in stages of --stage_epochs
    base: str = None  # the row whose run of the same seed it starts from


# The paper's settings (fixed t = 0.1) for all four, and the demo's choice,
# the first loss with a learned temperature. A learned temperature only makes
# sense for the first loss: the others fall as t grows, so they would push
# it to its ceiling.
FIXED = "build_dual_encoder.learnable_temperature = None"
CONVSE = ("train.loss = @AllNegativesLoss()", FIXED)
CONVSE_PP = ("train.loss = @HardestNegativeLoss()", FIXED)
VSE0 = ("train.loss = @HingeLoss()", "HingeLoss.max_violation = False", FIXED)
VSE_PP = ("train.loss = @HingeLoss()", "HingeLoss.max_violation = True", FIXED)
ROWS = {
    "all_negatives": Row("ConVSE (all negatives)", CONVSE),
    "hardest_negative": Row("ConVSE++ (hardest negative)", CONVSE_PP),
    "vse0": Row("VSE0 (sum of hinges)", VSE0),
    "vse_pp": Row("VSE++ (max of hinges)", VSE_PP),
    # The gin file's own setting: demo.gin and flickr8k.gin learn t.
    "all_negatives_learned_t": Row(
        "ConVSE, learned t (the gin file's)",
        ("train.loss = @AllNegativesLoss()",),
    ),
    # The paper's protocol (needs --stage_epochs).
    "vse_pp_base": Row("VSE++ base", VSE_PP, stages=1),
    "hardest_negative_from_base": Row(
        "ConVSE++ from the VSE++ base", CONVSE_PP, stages=1, base="vse_pp_base"
    ),
    "vse_pp_continued": Row(
        "VSE++ continued from its base", VSE_PP, stages=1, base="vse_pp_base"
    ),
}
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def run_folder(args, name, seed):
    return os.path.join(args.out_dir, name, f"seed{seed}")


def epochs_of(name, args):
    """The row's epochs; None: the gin file's."""
    if args.stage_epochs is None:
        return None
    return ROWS[name].stages * args.stage_epochs


def epochs_label(name, args):
    row = ROWS[name]
    if args.stage_epochs is None:
        return "gin file's"
    if row.base:
        return f"{args.stage_epochs} + {args.stage_epochs}"
    return str(epochs_of(name, args))


def trained_epochs(model_dir):
    with open(run_dir.RunDir(model_dir).operative_config) as f:
        found = re.search(r"^train\.epochs = (\d+)$", f.read(), re.M)
    return int(found.group(1)) if found else None


def train_one(name, seed, args):
    """The run's test metrics, training it first unless it exists."""
    row = ROWS[name]
    model_dir = run_folder(args, name, seed)
    metrics_path = run_dir.RunDir(model_dir).metrics
    epochs = epochs_of(name, args)
    if os.path.exists(metrics_path):
        if epochs is not None and trained_epochs(model_dir) != epochs:
            sys.exit(
                f"error: {model_dir} holds a run of "
                f"{trained_epochs(model_dir)} epochs, not {epochs}; "
                "remove it or choose another --out_dir."
            )
    else:
        bindings = list(row.bindings)
        if row.base:
            train_one(row.base, seed, args)
            base = os.path.abspath(run_folder(args, row.base, seed))
            bindings.append(f"train.init_from = '{base}'")
        if epochs is not None:
            bindings.append(f"train.epochs = {epochs}")
        feature_dir = os.path.abspath(
            getattr(args, "feature_dir", None)
            or os.path.join(args.out_dir, "features")
        )
        bindings += [
            f"train.seed = {seed}",
            f"train.feature_dir = '{feature_dir}'",
            "train.export = False",
            "train.projector_images = 0",
            *args.gin_bindings,
        ]
        command = [
            sys.executable,
            "-m",
            "vse_tf.train",
            *[f"--gin_file={f}" for f in args.gin_file],
            *[f"--gin_bindings={b}" for b in bindings],
            f"--model_dir={model_dir}",
        ]
        if args.data_dir:
            command.append(f"--data_dir={args.data_dir}")
        print(f"== {row.label}, seed {seed}: {' '.join(command)}", flush=True)
        started = time.time()
        subprocess.run(
            command,
            check=True,
            env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1"},
        )
        print(
            f"== {name} seed {seed} done in {time.time() - started:.0f} s",
            flush=True,
        )
    with open(metrics_path) as f:
        return json.load(f)


def validation_rsum(model_dir):
    """The run's validation rsum by epoch, from its TensorBoard log (which
    every run has written, those before history.csv too)."""
    import tensorflow as tf

    by_epoch = {}
    for path in sorted(
        glob.glob(
            os.path.join(
                run_dir.RunDir(model_dir).validation_logs,
                "events.out.tfevents.*",
            )
        )
    ):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "epoch_rsum":  # Keras drops the "val_"
                    by_epoch[event.step] = float(tf.make_ndarray(value.tensor))
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def curve(name, seed, args):
    """Validation rsum by epoch from the start: a two-stage row's base's
    epochs, then its own."""
    row = ROWS[name]
    own = validation_rsum(run_folder(args, name, seed))
    return (curve(row.base, seed, args) if row.base else []) + own


def cosine(metrics):
    """Scores by plain cosine: a hubness-corrected run keeps them apart."""
    return metrics.get("cosine", metrics)


def _mean(values):
    return sum(values) / len(values)


def _range(values):
    return f"{min(values):.1f} - {max(values):.1f}"


def markdown_table(results, epochs=None):
    """results: {row: [test metrics of each seed]}; epochs: {row: label}.

    R@K and rsum by plain cosine; hubness-corrected runs add their
    corrected rsum and its range."""
    corrected = all("cosine" in r for runs in results.values() for r in runs)
    header = (
        "| row | epochs | seeds | "
        + " | ".join(c.replace("_r", " R@") for c in COLUMNS)
        + " | rsum range |"
        + (" corrected rsum | corrected range |" if corrected else "")
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for name, runs in results.items():
        plain = [cosine(r) for r in runs]
        cells = [
            ROWS[name].label,
            (epochs or {}).get(name, ""),
            str(len(runs)),
            *(f"{_mean([m[c] for m in plain]):.1f}" for c in COLUMNS),
            _range([m["rsum"] for m in plain]),
        ]
        if corrected:
            cells += [
                f"{_mean([r['rsum'] for r in runs]):.1f}",
                _range([r["rsum"] for r in runs]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _separated(results, better, worse, score):
    return min(score(r) for r in results[better]) > max(
        score(r) for r in results[worse]
    )


def claims(results):
    """Which rsum differences exceed the spread over seeds, by plain cosine
    and (where the runs have it) with the hubness correction."""

    def plain(r):
        return cosine(r)["rsum"]

    def corrected(r):
        return r["rsum"]

    has_correction = all(
        "cosine" in r for runs in results.values() for r in runs
    )
    names = sorted(
        results, key=lambda n: -_mean([plain(r) for r in results[n]])
    )
    lines = []
    for i, better in enumerate(names):
        for worse in names[i + 1 :]:
            line = (
                f"- {ROWS[better].label} vs {ROWS[worse].label}: by "
                "cosine, "
                + (
                    "better beyond the spread (its worst seed beats "
                    "the other's best)"
                    if _separated(results, better, worse, plain)
                    else "within the spread; no difference claimed"
                )
            )
            if has_correction:
                line += "; corrected, " + (
                    "better beyond the spread"
                    if _separated(results, better, worse, corrected)
                    else "the other way beyond the spread"
                    if _separated(results, worse, better, corrected)
                    else "within the spread"
                )
            lines.append(line)
    return "\n".join(lines)


def warm_start_lines(curves):
    """For each two-stage row: where its base ended and where it began
    (validation rsum, mean over seeds)."""
    lines = []
    for name, runs in curves.items():
        base = ROWS[name].base
        if not base:
            continue
        base_epochs = len(curves[base][0]) if base in curves else None
        if not base_epochs:
            continue
        ended = _mean([c[base_epochs - 1] for c in curves[base]])
        began = _mean([c[base_epochs] for c in runs])
        lines.append(
            f"- {ROWS[name].label}: the base ended at val rsum "
            f"{ended:.1f}; its first epoch scores {began:.1f}."
        )
    return "\n".join(lines)


def plot(curves, path, title, stage_epochs=None):
    """Validation rsum by epoch: a line a row (the mean over seeds), its
    range over seeds shaded; a dashed line where the warm starts begin."""
    plt = tools.curves.pyplot()
    import matplotlib.ticker
    import numpy as np

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, runs in curves.items():
        length = min(len(c) for c in runs)
        # A two-stage row from its base's last epoch on: before it, it is
        # the base's line.
        start = stage_epochs - 1 if ROWS[name].base and stage_epochs else 0
        values = np.array([c[start:length] for c in runs])
        epochs = np.arange(start + 1, length + 1)
        (line,) = axes.plot(
            epochs,
            values.mean(axis=0),
            marker="o",
            markersize=3,
            label=ROWS[name].label,
        )
        axes.fill_between(
            epochs,
            values.min(axis=0),
            values.max(axis=0),
            color=line.get_color(),
            alpha=0.2,
        )
    if stage_epochs and any(ROWS[name].base for name in curves):
        axes.axvline(
            stage_epochs + 0.5, color="grey", linestyle="--", linewidth=1
        )
        axes.annotate(
            " warm starts",
            (stage_epochs + 0.5, 0.02),
            xycoords=("data", "axes fraction"),
            color="grey",
            fontsize=8,
        )
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation rsum (plain cosine)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tools.curves.save(figure, path)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="rows: "
        + "; ".join(f"{name}: {row.label}" for name, row in ROWS.items()),
    )
    parser.add_argument(
        "--gin_file",
        action="append",
        default=None,
        help="gin config(s) shared by every run (default: gin/demo.gin)",
    )
    parser.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="extra bindings shared by every run",
    )
    parser.add_argument("--out_dir", default="runs/compare_losses")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--rows",
        "--losses",
        nargs="+",
        default=[
            "all_negatives_learned_t",
            "all_negatives",
            "hardest_negative",
            "vse0",
            "vse_pp",
        ],
        choices=list(ROWS),
        dest="rows",
    )
    parser.add_argument(
        "--stage_epochs",
        type=int,
        default=None,
        help="E: the base trains E epochs, the two-stage "
        "rows E more, the rest 2E (default: every run "
        "the gin file's epochs, no two-stage rows)",
    )
    parser.add_argument(
        "--plot",
        default=None,
        help="also write the validation curves to this PNG",
    )
    args = parser.parse_args()
    args.gin_file = args.gin_file or ["gin/demo.gin"]
    if args.stage_epochs is None and any(
        ROWS[name].stages == 1 for name in args.rows
    ):
        parser.error(
            "the rows vse_pp_base, hardest_negative_from_base and "
            "vse_pp_continued need --stage_epochs"
        )
    if args.stage_epochs is not None and args.stage_epochs < 1:
        parser.error("--stage_epochs must be at least 1")

    started = time.time()
    results = {
        name: [train_one(name, seed, args) for seed in args.seeds]
        for name in args.rows
    }
    curves = {
        name: [curve(name, seed, args) for seed in args.seeds]
        for name in args.rows
    }
    epochs = {name: epochs_label(name, args) for name in args.rows}
    table = markdown_table(results, epochs)
    warm = warm_start_lines(curves)
    if warm:
        table += "\n\nWarm starts (validation rsum, mean over seeds):\n" + warm
    if len(args.seeds) > 1:
        table += "\n\n" + claims(results)
    print(table)
    print(f"({time.time() - started:.0f} s in all, reused runs included)")
    os.makedirs(args.out_dir, exist_ok=True)
    io_utils.write_text_atomic(
        os.path.join(args.out_dir, "comparison.md"), table + "\n"
    )
    io_utils.write_json_atomic(
        os.path.join(args.out_dir, "comparison.json"),
        {"test": results, "val_rsum_by_epoch": curves, "epochs": epochs},
    )
    if args.plot:
        plot(
            curves,
            args.plot,
            f"Validation rsum by epoch, mean and range "
            f"over seeds {', '.join(map(str, args.seeds))}",
            args.stage_epochs,
        )
        print(f"Wrote {args.plot}")


if __name__ == "__main__":
    main()
