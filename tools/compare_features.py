"""How close two caches of backbone features are, e.g. bfloat16 to float32.

    python -m tools.compare_features runs/f8k_fp32/features/val.npz \
        runs/f8k_bf16/features/val.npz

Prints, for the image features and the caption features, the cosine
between each pair of rows (the same image or caption in both files):
median, 1st percentile and minimum. A cache is a `<split>.npz` of
`vse_tf.training.features` (train.cache_features).
"""

import argparse

import numpy as np


def row_cosines(a, b):
    """Cosine between each row of `a` and the same row of `b` (float64)."""
    a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
    b = np.asarray(b, np.float64).reshape(-1, b.shape[-1])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="a features .npz (float32)")
    parser.add_argument(
        "other", help="the same split's features, another precision"
    )
    args = parser.parse_args()
    with np.load(args.reference) as ref, np.load(args.other) as other:
        if not np.array_equal(ref["image_id"], other["image_id"]):
            parser.error("the two files hold other images")
        print("| features | rows | median cosine | 1st percentile | min |")
        print("|---|---|---|---|---|")
        for name in ("image", "captions"):
            cosines = row_cosines(ref[name], other[name])
            print(
                f"| {name} | {len(cosines):,} | {np.median(cosines):.5f} | "
                f"{np.percentile(cosines, 1):.5f} | {cosines.min():.5f} |"
            )


if __name__ == "__main__":
    main()
