"""Training pairs a second read from prepared records against loose photos.

    python -m tools.bench_input --dataset=csv:runs/f8k_captions.csv \
        --records=runs/f8k_records --json=input.json

Both go through the training input (`pipeline.training_pairs`, uncached,
as a split too large for memory is read each epoch): read, decode, resize
and crop to --image_size, shuffle, batch. The records are written first
with `vse_tf.prepare` when --records holds none. Each reading is timed
--repeats times over --steps batches after one warm-up batch; the figures
are medians. The file system's page cache is warm for both (the files were
read before), which favours the loose photos: on a network disk or an
object store each photo is a request of its own.
"""

import argparse
import statistics
import sys
import time

from tools import machine_info
from vse_tf import io_utils
from vse_tf.data import karpathy
from vse_tf.data import pipeline
from vse_tf.data import records


def pairs_per_second(dataset, image_size, batch_size, steps):
    examples = karpathy.load_examples(dataset, "train", image_size=image_size)
    batches = iter(
        pipeline.training_pairs(
            examples, batch_size, seed=0, steps_per_epoch=None, cache=False
        )
    )
    next(batches)  # the pipeline's start and its first shuffle buffer
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument(
        "--dataset", required=True, help="csv:PATH or jsonl:PATH"
    )
    parser.add_argument("--records", required=True, help="the records' folder")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    try:
        records.read_manifest(f"records:{args.records}")
    except Exception:  # noqa: BLE001  (none yet: write them)
        records.prepare(args.dataset, args.records)
    readings = {
        "loose photos": args.dataset,
        "records": f"records:{args.records}",
    }
    figures = {
        "machine": machine_info.describe(),
        **vars(args),
        "pairs_per_s": {},
    }
    for name, dataset in readings.items():
        runs = [
            pairs_per_second(
                dataset, args.image_size, args.batch_size, args.steps
            )
            for _ in range(args.repeats)
        ]
        figures["pairs_per_s"][name] = statistics.median(runs)
        print(
            f"{name:13} {statistics.median(runs):8.0f} pairs/s (median of "
            f"{args.repeats}: {', '.join(f'{r:.0f}' for r in runs)})"
        )
    ratio = (
        figures["pairs_per_s"]["records"]
        / figures["pairs_per_s"]["loose photos"]
    )
    figures["records_over_loose"] = ratio
    print(f"records / loose photos: {ratio:.2f}x; {figures['machine']}")
    if args.json:
        io_utils.write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
