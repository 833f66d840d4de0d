"""Times Recall@K evaluation at COCO 5K size against its floor and a reference.

    python -m tools.bench_eval                 # 5,000 images x 25,000 captions
    python -m tools.bench_eval --images=1000 --json=eval.json
    python -m tools.bench_eval --curve 1000 2000 5000 10000 25000 \
        --json=eval_curve.json --plot=eval_curve.png

Three timings on the same random unit embeddings (float32, D = 1024):

  matmul     the bare similarity matrix, images @ texts.T: the floor, since
             every score must be computed once and ranks stay exact;
  vse_tf     `vse_tf.evaluation.retrieval_metrics`;
  reference  the per-query evaluation of the VSE++ code (i2t/t2i in its
             metrics.py): for each query its dot products with every
             candidate, then a full argsort of that row.

It compares the two and prints the times, their ratios and the peak memory
each allocates above the embeddings (tracemalloc, which sees NumPy's
buffers). The reference breaks ties by argsort, vse_tf counts them against
the truth (scores within evaluation.TIE_TOLERANCE), so a rank of vse_tf may
be higher than the reference's where a competitor nearly ties the truth,
and never lower: the script counts those ranks and fails if one is lower.

--curve measures vse_tf against the floor at each size (no reference):
the floor there is the same product a chunk of 512 images at a time (at
25K images the whole matrix is 12.5 GB), and beside vse_tf's peak memory
stands the whole score matrix's, which a one-product evaluation holds.
"""

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

from tools import curves
from tools import machine_info
from vse_tf import evaluation
from vse_tf import io_utils


def reference_ranks(images, texts, captions_per_image=5):
    """VSE++'s evaluation loops (metrics.py, i2t and t2i), in NumPy."""
    num_images = images.shape[0]
    i2t = np.zeros(num_images, dtype=np.int64)
    for index in range(num_images):
        scores = images[index] @ texts.T
        order = np.argsort(scores)[::-1]
        i2t[index] = min(
            np.where(order == caption)[0][0]
            for caption in range(
                captions_per_image * index, captions_per_image * (index + 1)
            )
        )
    t2i = np.zeros(texts.shape[0], dtype=np.int64)
    for index in range(texts.shape[0]):
        scores = texts[index] @ images.T
        order = np.argsort(scores)[::-1]
        t2i[index] = np.where(order == index // captions_per_image)[0][0]
    return i2t, t2i


def measure(function, *args, repeats=1):
    """(median seconds, peak bytes allocated while it ran, result).

    Time and memory come from separate runs: tracing allocations slows
    NumPy down.
    """
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(*args)
        seconds.append(time.perf_counter() - started)
    tracemalloc.start()
    function(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(seconds), peak, result


def random_unit(rng, rows, dim):
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunked_product(images, texts, chunk_size=512):
    """Every score once, a chunk of image rows at a time, then dropped."""
    for start in range(0, len(images), chunk_size):
        images[start : start + chunk_size] @ texts.T


def embeddings(rng, images, captions_per_image, dim):
    """Unit image and caption rows; `captions_per_image` one count or a
    count per image."""
    image_rows = random_unit(rng, images, dim)
    counts = np.broadcast_to(captions_per_image, images)
    # Captions noisy copies of their image, so recall is neither 0 nor 100.
    texts = np.repeat(image_rows, counts, axis=0) + 10 * (
        random_unit(rng, int(counts.sum()), dim)
    )
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    return image_rows, texts


def curve(args):
    """Time and peak memory of vse_tf and the floor at each size."""
    points = []
    for size in args.curve:
        images, texts = embeddings(
            np.random.default_rng(0), size, args.captions_per_image, args.dim
        )
        repeats = args.repeats if size <= 5000 else 1
        floor = measure(chunked_product, images, texts, repeats=repeats)
        ours = measure(
            lambda a, b: evaluation.retrieval_metrics(
                a, b, args.captions_per_image
            ),
            images,
            texts,
            repeats=repeats,
        )
        points.append(
            {
                "images": size,
                "captions": len(texts),
                "repeats": repeats,
                "matmul_s": floor[0],
                "vse_tf_s": ours[0],
                "vse_tf_over_matmul": ours[0] / floor[0],
                "vse_tf_peak_mb": ours[1] / 1e6,
                "score_matrix_mb": size * len(texts) * 4 / 1e6,
            }
        )
        p = points[-1]
        print(
            f"{size:>6} images: matmul {p['matmul_s']:7.2f} s, vse_tf "
            f"{p['vse_tf_s']:7.2f} s ({p['vse_tf_over_matmul']:.2f}x), "
            f"peak {p['vse_tf_peak_mb']:6.0f} MB (the whole matrix "
            f"{p['score_matrix_mb']:,.0f} MB)"
        )
    sizes = [p["images"] for p in points]
    growth = {
        key: curves.slope(sizes, [p[key] for p in points])
        for key in ("matmul_s", "vse_tf_s", "vse_tf_peak_mb")
    }
    print(f"Growth exponents (1 = linear, 2 = quadratic): {growth}")
    figures = {
        "machine": machine_info.describe(),
        "dim": args.dim,
        "points": points,
        "growth": growth,
    }
    print(figures["machine"])
    if args.json:
        io_utils.write_json_atomic(args.json, figures)
    if args.plot:
        curves.plot(
            args.plot,
            f"Recall@K evaluation, 5 captions an image, D = {args.dim}",
            "images",
            "seconds",
            {
                "vse_tf": (sizes, [p["vse_tf_s"] for p in points]),
                "matrix product (floor)": (
                    sizes,
                    [p["matmul_s"] for p in points],
                ),
            },
            figures["machine"],
        )
        memory_path = os.path.splitext(args.plot)[0] + "_memory.png"
        curves.plot(
            memory_path,
            "Evaluation peak memory above the embeddings",
            "images",
            "MB",
            {
                "vse_tf": (sizes, [p["vse_tf_peak_mb"] for p in points]),
                "the whole score matrix": (
                    sizes,
                    [p["score_matrix_mb"] for p in points],
                ),
            },
            figures["machine"],
        )
        print(f"Wrote {args.plot} and {memory_path}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions_per_image", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="median of this many runs for matmul and vse_tf",
    )
    parser.add_argument(
        "--skip_reference",
        action="store_true",
        help="skip the slow per-query reference",
    )
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--curve",
        type=int,
        nargs="+",
        metavar="IMAGES",
        help="time vse_tf and the floor at these sizes",
    )
    parser.add_argument(
        "--plot",
        help="with --curve: the time curve's PNG (and *_memory.png beside it)",
    )
    parser.add_argument(
        "--variable_captions",
        action="store_true",
        help="a count per image, drawn from 1 to 2 * captions_per_image - 1 "
        "(mean captions_per_image), as one's own data has; no reference",
    )
    args = parser.parse_args()
    if args.curve:
        return curve(args)
    if args.variable_captions:
        args.captions_per_image = np.random.default_rng(1).integers(
            1, 2 * args.captions_per_image, size=args.images
        )
        args.skip_reference = True

    images, texts = embeddings(
        np.random.default_rng(0), args.images, args.captions_per_image, args.dim
    )
    print(
        f"{args.images} images x {len(texts)} captions, D = {args.dim}, "
        f"float32 ({(images.nbytes + texts.nbytes) / 2**20:.0f} MiB)"
    )

    matmul = measure(lambda a, b: a @ b.T, images, texts, repeats=args.repeats)
    ours = measure(
        lambda a, b: evaluation.retrieval_metrics(
            a, b, args.captions_per_image
        ),
        images,
        texts,
        repeats=args.repeats,
    )
    rows = [("matmul (floor)", *matmul[:2]), ("vse_tf", *ours[:2])]
    figures = {
        "images": args.images,
        "captions": len(texts),
        "captions_per_image": (
            f"drawn, {np.min(args.captions_per_image)} to "
            f"{np.max(args.captions_per_image)}"
            if args.variable_captions
            else args.captions_per_image
        ),
        "dim": args.dim,
        "matmul_s": matmul[0],
        "vse_tf_s": ours[0],
        "matmul_peak_mb": matmul[1] / 1e6,
        "vse_tf_peak_mb": ours[1] / 1e6,
        "vse_tf_over_matmul": ours[0] / matmul[0],
    }
    if not args.skip_reference:
        print("Running the per-query reference (minutes) ...")
        # Timed once and traced once: it takes minutes.
        reference = measure(
            reference_ranks, images, texts, args.captions_per_image
        )
        rows.append(("reference (VSE++ loops)", *reference[:2]))
        ranks = evaluation.retrieval_ranks(
            images, texts, args.captions_per_image
        )
        figures.update(
            reference_s=reference[0],
            reference_peak_mb=reference[1] / 1e6,
            speedup_over_reference=reference[0] / ours[0],
            identical_recalls=all(
                ours[2][name]
                == evaluation.metrics_from_ranks(*reference[2])[name]
                for name in evaluation.METRIC_NAMES
                if "_r" in name or name == "rsum"
            ),
        )
        for direction, found, expected in zip(
            ("i2t", "t2i"), ranks, reference[2]
        ):
            figures[f"{direction}_ranks_higher"] = int(np.sum(found > expected))
            figures[f"{direction}_ranks_lower"] = int(np.sum(found < expected))

    print(f"\n{'':26}{'seconds':>10}{'peak MB':>10}")
    for name, seconds, peak in rows:
        print(f"{name:26}{seconds:10.2f}{peak / 1e6:10.0f}")
    print(f"\nvse_tf / matmul: {figures['vse_tf_over_matmul']:.2f}x")
    if "reference_s" in figures:
        print(
            f"reference / vse_tf: {figures['speedup_over_reference']:.1f}x "
            "faster; recalls and rsum identical: "
            f"{figures['identical_recalls']}; ranks higher by the tie "
            f"rule: {figures['i2t_ranks_higher']} of {args.images} images, "
            f"{figures['t2i_ranks_higher']} of {len(texts)} captions; "
            f"lower: {figures['i2t_ranks_lower']}, "
            f"{figures['t2i_ranks_lower']}"
        )
    figures["machine"] = machine_info.describe()
    print(
        f"rsum {ours[2]['rsum']:.1f}; {figures['machine']}, NumPy "
        f"{np.__version__}"
    )
    if args.json:
        io_utils.write_json_atomic(args.json, figures)
    return (
        1
        if figures.get("i2t_ranks_lower") or figures.get("t2i_ranks_lower")
        else 0
    )


if __name__ == "__main__":
    sys.exit(main())
