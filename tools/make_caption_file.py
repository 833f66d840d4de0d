"""Writes a Karpathy split file's photos and captions as a caption file.

    python -m tools.make_caption_file --data_dir=../shared/data \
        --dataset=flickr8k --out=runs/f8k_captions.csv --keep=1-5

One row a caption (image, caption, split), the photos' paths absolute, so
that `train.dataset = 'csv:runs/f8k_captions.csv'` trains on the same
photos as `'flickr8k'`. `--keep=1-5` keeps, in val and test, a seeded
draw of 1 to 5 captions a photo (train keeps all): a dataset whose photos
have different numbers of captions, as one's own has.
"""

import argparse
import csv
import io
import json
import os
import sys

import numpy as np

from vse_tf import io_utils
from vse_tf.data import karpathy


def rows(dataset, data_dir, keep, seed):
    """[{image, caption, split}] of every photo of the split file."""
    rng = np.random.default_rng(seed)
    folder = karpathy.image_folder(dataset, data_dir)
    out = []
    for entry in karpathy.read_split_file(dataset, data_dir):
        split = "train" if entry["split"] == "restval" else entry["split"]
        captions = [s["raw"] for s in entry["sentences"]][:5]
        if split != "train" and keep:
            captions = captions[: rng.integers(keep[0], keep[1] + 1)]
        image = os.path.join(
            folder, entry.get("filepath", ""), entry["filename"]
        )
        out += [
            {"image": os.path.abspath(image), "caption": c, "split": split}
            for c in captions
        ]
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--data_dir", required=True)
    parser.add_argument(
        "--dataset", default="flickr8k", choices=karpathy.DATASETS
    )
    parser.add_argument("--out", required=True, help="a .csv or .jsonl path")
    parser.add_argument(
        "--keep",
        help="MIN-MAX: captions kept a photo in val and test, drawn "
        "(default: all 5)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keep = tuple(int(n) for n in args.keep.split("-")) if args.keep else None
    table = rows(args.dataset, args.data_dir, keep, args.seed)
    text = io.StringIO(newline="")
    if args.out.endswith(".jsonl"):
        text.writelines(json.dumps(row) + "\n" for row in table)
    else:
        writer = csv.DictWriter(text, fieldnames=["image", "caption", "split"])
        writer.writeheader()
        writer.writerows(table)
    with io_utils.atomic_path(args.out) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text.getvalue())
    counts = {
        s: sum(r["split"] == s for r in table) for s in ("train", "val", "test")
    }
    print(f"Wrote {args.out}: {len(table)} captions ({counts}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
