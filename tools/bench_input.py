"""Training pairs a second read from prepared records against loose photos.

    python -m tools.bench_input --dataset=csv:runs/f8k_captions.csv \
        --records=runs/f8k_records --json=input.json

Both read the train split as a run reads a split too large to cache, each
epoch: the files, then each photo decoded, resized and cropped to
--image_size, with its captions (`karpathy.load_examples`, the examples
the training pairs are cut from). One pass over the split a timing,
--repeats of them after a warm-up pass, the two readings taking turns;
the figures are medians, in
photos and in pairs (captions) a second. The records are written first
with `vse_tf.prepare` when --records holds none. By default the file
system's page cache is warm for both, as from the second epoch on a
machine whose memory holds the files; --cold empties it before each pass
(root only), as a first epoch or a data set larger than memory reads
them: from the disk, each loose photo a request of its own.
"""

import argparse
import os
import statistics
import sys
import time

import tensorflow as tf

from tools import machine_info
from vse_tf import io_utils
from vse_tf.data import karpathy
from vse_tf.data import records


def drop_page_cache():
    """Empties Linux's page cache (root only), so that a pass reads the
    disk as a first epoch on a fresh machine does."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def one_pass(dataset, image_size, cold=False):
    """(photos, pairs, seconds) of one pass over the train split."""
    if cold:
        drop_page_cache()
    examples = karpathy.load_examples(dataset, "train", image_size=image_size)
    photos = pairs = 0
    started = time.perf_counter()
    for batch in examples.ragged_batch(64).prefetch(tf.data.AUTOTUNE):
        photos += int(batch["image"].shape[0])
        pairs += int(tf.size(batch["captions"]))
    return photos, pairs, time.perf_counter() - started


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="empty the page cache before each pass (root only): the "
        "files come from the disk",
    )
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
    figures = {"machine": machine_info.describe(), **vars(args), "readings": {}}
    for dataset in readings.values():
        one_pass(dataset, args.image_size)  # warm-up: caches, tracing
    # The two readings take turns, so that a slow spell of the machine
    # falls on both.
    passes = {name: [] for name in readings}
    for _ in range(args.repeats):
        for name, dataset in readings.items():
            passes[name].append(one_pass(dataset, args.image_size, args.cold))
    for name, timed in passes.items():
        photos, pairs, _ = timed[0]
        seconds = statistics.median(p[2] for p in timed)
        figures["readings"][name] = {
            "photos": photos,
            "pairs": pairs,
            "seconds": seconds,
            "all_seconds": [p[2] for p in timed],
            "photos_per_s": photos / seconds,
            "pairs_per_s": pairs / seconds,
        }
        print(
            f"{name:13} {photos / seconds:7.0f} photos/s "
            f"{pairs / seconds:8.0f} pairs/s ({photos} photos, median of "
            f"{args.repeats} passes: "
            f"{', '.join(f'{p[2]:.1f} s' for p in timed)})"
        )
    read = figures["readings"]
    ratio = read["records"]["pairs_per_s"] / read["loose photos"]["pairs_per_s"]
    figures["records_over_loose"] = ratio
    print(f"records / loose photos: {ratio:.2f}x; {figures['machine']}")
    if args.json:
        io_utils.write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
