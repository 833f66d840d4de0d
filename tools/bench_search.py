"""Search at 10^4 to 10^6 images: build time, memory and query latency of
the exact memory-mapped index, and recall@10 and latency of the faiss one.

    python -m tools.bench_search --json=search.json --plot=search.png
    python -m tools.bench_search --sizes 10000 100000 --no-approximate

The embeddings are synthetic, D = 512 (gin/flickr8k.gin's), drawn to look
like the real ones: unit vectors from a Gaussian whose variances fall as
i^-1.56 over its dimensions, with a mean of norm 0.16, which is how the
Flickr8k model's test-image embeddings spread (fitted on their spectrum:
61 dimensions hold 90% of the variance). Queries come from the same
distribution. Isotropic noise would be the worst case for an inverted file
and unlike any trained model.

For each size:
  build      the index file written chunk by chunk (`embedding_file.write`,
             what `python -m vse_tf.search` does after embedding), its time
             without the time to draw the numbers, and the file's size;
  exact      `nearest.top_k`, k = 10: the latency of one query and of a
             batch of 100 (per query), median of --repeats, the file in
             the page cache as a search right after another finds it, and
             the process's own peak memory above the start (anonymous
             pages; the mapped file's pages are the kernel's to drop);
  approx.    `nearest.ApproximateIndex` (faiss IVF-Flat, 4 sqrt(N) lists):
             build time, memory, and for each --nprobe the recall@10
             against the exact answer and the latency per query in
             batches of 100 and alone.
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from tools import curves
from tools import machine_info
from vse_tf import io_utils
from vse_tf.serving import embedding_file
from vse_tf.serving import nearest

DIM = 512
SPECTRUM_EXPONENT = 1.56  # variance of dimension i ~ i^-1.56
MEAN_NORM = 0.16
CHUNK = 4096  # rows drawn at a time, as embedding batches come
K = 10


class Embeddings:
    """Draws unit embeddings with the fitted spectrum and mean."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        scale = np.arange(1, DIM + 1) ** (-SPECTRUM_EXPONENT / 2)
        self.scale = (scale / np.linalg.norm(scale)).astype(np.float32)
        mean = self.rng.normal(size=DIM)
        self.mean = (MEAN_NORM * mean / np.linalg.norm(mean)).astype(np.float32)
        self.drawing_s = 0.0

    def draw(self, count):
        start = time.perf_counter()
        x = self.rng.standard_normal((count, DIM), dtype=np.float32)
        x = x * self.scale + self.mean
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        self.drawing_s += time.perf_counter() - start
        return x

    def chunks(self, count):
        for start in range(0, count, CHUNK):
            yield self.draw(min(CHUNK, count - start))


def median_time(repeats, function, *args, **kwargs):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_size(size, folder, args):
    embeddings = Embeddings(seed=size)
    path = os.path.join(folder, f"embeddings-{size}.npy")
    with curves.PeakMemory() as build_memory:
        start = time.perf_counter()
        embedding_file.write(
            path, embeddings.chunks(size), size, progress=f"Writing {size:,}"
        )
        build_s = time.perf_counter() - start - embeddings.drawing_s
    rows = embedding_file.open_rows(path)
    queries = Embeddings(seed=size + 1).draw(100)
    nearest.top_k(queries[:1], rows, K)  # the page cache, as a search has
    with curves.PeakMemory() as query_memory:
        exact, _ = nearest.top_k(queries, rows, K)
    result = {
        "size": size,
        "dim": DIM,
        "build_s": build_s,
        "build_anon_mib": build_memory.anon_mib,
        "file_mib": os.path.getsize(path) / 2**20,
        "exact_ms_one_query": 1e3
        * median_time(args.repeats, nearest.top_k, queries[:1], rows, K),
        "exact_ms_per_query_batch100": 10
        * median_time(args.repeats, nearest.top_k, queries, rows, K),
        "exact_query_anon_mib": query_memory.anon_mib,
        "exact_query_file_mib": query_memory.file_mib,
    }
    if args.approximate:
        result["approximate"] = approximate(rows, queries, exact, args)
    os.remove(path)  # the mapping stays valid until `rows` goes
    return result


def approximate(rows, queries, exact, args):
    with curves.PeakMemory() as memory:
        start = time.perf_counter()
        index = nearest.ApproximateIndex.build(rows)
        build_s = time.perf_counter() - start
    probes = []
    for nprobe in args.nprobe:
        found, _ = index.top_k(queries, K, nprobe=nprobe)
        probes.append(
            {
                "nprobe": nprobe,
                "recall_at_10": nearest.recall_at_k(found, exact),
                "ms_per_query_batch100": 10
                * median_time(
                    args.repeats, index.top_k, queries, K, nprobe=nprobe
                ),
                "ms_one_query": 1e3
                * median_time(
                    args.repeats, index.top_k, queries[:1], K, nprobe=nprobe
                ),
            }
        )
    return {
        "lists": index.lists,
        "build_s": build_s,
        "anon_mib": memory.anon_mib,
        "probes": probes,
    }


def print_table(results):
    print(
        "\n| images | file MiB | build s | build MiB | exact ms, 1 query "
        "| exact ms/query, 100 | query MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['size']:,} | {r['file_mib']:.0f} | {r['build_s']:.2f} "
            f"| {r['build_anon_mib']:.0f} | {r['exact_ms_one_query']:.1f} "
            f"| {r['exact_ms_per_query_batch100']:.2f} "
            f"| {r['exact_query_anon_mib']:.0f} |"
        )
    approximate = [r for r in results if "approximate" in r]
    if not approximate:
        return
    print(
        "\n| images | lists | build s | index MiB | nprobe | recall@10 "
        "| ms/query, 100 | ms, 1 query |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in approximate:
        a = r["approximate"]
        for p in a["probes"]:
            print(
                f"| {r['size']:,} | {a['lists']} | {a['build_s']:.1f} "
                f"| {a['anon_mib']:.0f} | {p['nprobe']} "
                f"| {p['recall_at_10']:.3f} "
                f"| {p['ms_per_query_batch100']:.2f} "
                f"| {p['ms_one_query']:.2f} |"
            )


def draw(path, results, machine):
    sizes = [r["size"] for r in results]
    series = {
        "exact, 1 query": (sizes, [r["exact_ms_one_query"] for r in results]),
        "exact, per query in 100": (
            sizes,
            [r["exact_ms_per_query_batch100"] for r in results],
        ),
    }
    approximate = [r for r in results if "approximate" in r]
    for at, probe in enumerate(
        approximate[0]["approximate"]["probes"] if approximate else []
    ):
        series[f"IVF nprobe {probe['nprobe']}, per query in 100"] = (
            [r["size"] for r in approximate],
            [
                r["approximate"]["probes"][at]["ms_per_query_batch100"]
                for r in approximate
            ],
        )
    curves.plot(
        path,
        "Search latency against collection size (k = 10)",
        "images in the collection",
        "ms per query",
        series,
        machine,
    )
    memory_path = os.path.splitext(path)[0] + "_memory.png"
    memory = {
        "index file (page cache)": (sizes, [r["file_mib"] for r in results]),
        "exact query, process": (
            sizes,
            [max(r["exact_query_anon_mib"], 0.1) for r in results],
        ),
    }
    if approximate:
        memory["IVF index, process"] = (
            [r["size"] for r in approximate],
            [r["approximate"]["anon_mib"] for r in approximate],
        )
    curves.plot(
        memory_path,
        "Search memory against collection size",
        "images in the collection",
        "MiB",
        memory,
        machine,
    )
    return memory_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument(
        "--nprobe", type=int, nargs="+", default=[8, 16, 32, 64]
    )
    parser.add_argument(
        "--no-approximate",
        dest="approximate",
        action="store_false",
        help="the exact index only",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--folder",
        default=None,
        help="where the index "
        "files go (default a temporary folder; 2 GiB at "
        "10^6)",
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--plot",
        help="write the latency curve here (and "
        "the memory curve beside it, *_memory.png)",
    )
    args = parser.parse_args()
    machine = machine_info.describe()
    print(machine)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        results = [one_size(size, folder, args) for size in args.sizes]
    print_table(results)
    sizes = [r["size"] for r in results]
    growth = (
        {
            "exact_one_query": curves.slope(
                sizes, [r["exact_ms_one_query"] for r in results]
            ),
            "build": curves.slope(sizes, [r["build_s"] for r in results]),
        }
        if len(sizes) > 1
        else {}
    )
    print(f"\nGrowth exponents (1 = linear): {growth}")
    if args.json:
        io_utils.write_json_atomic(
            args.json,
            {"machine": machine, "results": results, "growth": growth},
        )
    if args.plot:
        memory_path = draw(args.plot, results, machine)
        print(f"Wrote {args.plot} and {memory_path}")


if __name__ == "__main__":
    main()
