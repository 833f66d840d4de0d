"""The k candidates of highest dot product with each query.

`top_k` is exact: it streams the candidates (a NumPy array, or a
memory-mapped file from `embedding_file`) a chunk of rows at a time and
keeps the best k of each query across chunks, so memory holds one chunk's
scores, [queries_per_batch, rows_per_chunk], whatever the collection's
size. Equal scores rank by index, lowest first, so the answer does not
depend on the chunking.

`ApproximateIndex` (the optional `faiss` extra) is for collections past
what the exact scan serves at the latency wanted: an inverted file of
k-means lists over the same rows; a query scans `nprobe` lists only.
"""

import numpy as np
from tqdm import tqdm

from vse_tf import errors

ROWS_PER_CHUNK = 65_536
QUERIES_PER_BATCH = 256
NPROBE = 64  # recall@10 0.98 at 10^6 rows in tools/bench_search.py


def top_k(
    queries,
    candidates,
    k,
    rows_per_chunk=ROWS_PER_CHUNK,
    queries_per_batch=QUERIES_PER_BATCH,
):
    """(indices [Q, k'], scores [Q, k']), best first, k' = min(k, N)."""
    queries = np.asarray(queries, dtype=np.float32)
    batches = [
        _top_k_of_batch(
            queries[start : start + queries_per_batch],
            candidates,
            k,
            rows_per_chunk,
        )
        for start in range(0, len(queries), queries_per_batch)
    ]
    return (
        np.concatenate([indices for indices, _ in batches]),
        np.concatenate([scores for _, scores in batches]),
    )


def _top_k_of_batch(queries, candidates, k, rows_per_chunk):
    best_indices = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(candidates), rows_per_chunk):
        rows = np.asarray(
            candidates[start : start + rows_per_chunk], dtype=np.float32
        )
        scores = queries @ rows.T
        indices = np.broadcast_to(
            np.arange(start, start + len(rows)), scores.shape
        )
        indices, scores = _best(scores, indices, k)
        best_indices, best_scores = _best(
            np.concatenate([best_scores, scores], axis=1),
            np.concatenate([best_indices, indices], axis=1),
            k,
        )
    return best_indices, best_scores


def _best(scores, indices, k):
    """Per row the k highest scores, ties to the lower index, best first.

    np.argpartition alone would keep an arbitrary one of the scores tied
    at the k-th place, so this keeps every score at or above that place,
    orders them by (score, index) and takes the first k."""
    k = min(k, scores.shape[1])
    if k == 0:
        return indices[:, :0], scores[:, :0]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    rows, columns = np.nonzero(scores >= kth)
    kept_scores, kept_indices = scores[rows, columns], indices[rows, columns]
    order = np.lexsort((kept_indices, -kept_scores, rows))
    # Every row kept at least k entries; its first k, in order, are its best.
    firsts = np.searchsorted(rows[order], np.arange(len(scores)))
    take = order[(firsts[:, None] + np.arange(k)).ravel()]
    return (kept_indices[take].reshape(-1, k), kept_scores[take].reshape(-1, k))


class ApproximateIndex:
    """An inverted-file index (faiss IndexIVFFlat, inner product).

    `lists` k-means centroids are learnt from a sample of the rows, every
    row is filed under its nearest centroid, and a query scores only the
    rows of its `nprobe` nearest lists: about nprobe / lists of the scan.
    Rows are added in chunks, so a memory-mapped file is never read whole
    at once (the index itself holds a copy of every row, as the exact
    scan's page cache does)."""

    def __init__(self, index):
        self.index = index

    def __len__(self):
        return self.index.ntotal

    @property
    def lists(self):
        return self.index.nlist

    @classmethod
    def build(
        cls,
        rows,
        lists=None,
        sample=None,
        seed=0,
        rows_per_chunk=ROWS_PER_CHUNK,
        progress=None,
    ):
        faiss = require_faiss()
        count, dim = rows.shape
        # 4 sqrt(N) lists, the usual start; faiss wants 39 points a
        # centroid to learn it, so a small collection gets fewer (one
        # list under 78 rows: the exact scan).
        lists = lists or max(1, min(int(4 * np.sqrt(count)), count // 39))
        sample = min(count, sample or 64 * lists)
        chosen = np.sort(
            np.random.default_rng(seed).choice(
                count, size=sample, replace=False
            )
        )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(
            quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = seed
        index.train(np.ascontiguousarray(rows[chosen], dtype=np.float32))
        starts = range(0, count, rows_per_chunk)
        for start in tqdm(
            starts,
            desc=progress,
            unit="chunk",
            disable=True if progress is None else None,
        ):
            index.add(
                np.ascontiguousarray(
                    rows[start : start + rows_per_chunk], dtype=np.float32
                )
            )
        return cls(index)

    def top_k(self, queries, k, nprobe=NPROBE):
        """(indices [Q, k'], scores [Q, k']), best first, as `top_k`'s,
        k' = min(k, rows). A query whose `nprobe` lists hold fewer than k'
        rows is searched again over every list."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        self.index.nprobe = nprobe
        scores, indices = self.index.search(queries, k)
        short = (indices < 0).any(axis=1)
        if short.any():
            self.index.nprobe = self.lists
            scores[short], indices[short] = self.index.search(queries[short], k)
        return indices, scores

    def save(self, path):
        require_faiss().write_index(self.index, path)

    @classmethod
    def load(cls, path):
        return cls(require_faiss().read_index(path))


def require_faiss():
    try:
        import faiss
    except ImportError as error:
        raise errors.UserError(
            "The approximate index needs faiss, which is not installed: "
            "pip install -e '.[faiss]' (or pip install faiss-cpu), or "
            "search exactly."
        ) from error
    return faiss


def recall_at_k(approximate, exact):
    """The share of the exact top k that the approximate top k found."""
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approximate, exact)]
    return float(np.sum(hits)) / exact.size
