"""Exact top-k over chunks of a memory-mapped file, and the faiss index."""

import sys
import tracemalloc

import numpy as np
import pytest

from vse_tf import errors
from vse_tf.serving import embedding_file
from vse_tf.serving import nearest


def _reference(queries, candidates, k):
    """Every score, then a full sort by (score desc, index asc)."""
    scores = queries @ candidates.T
    columns = np.broadcast_to(np.arange(len(candidates)), scores.shape)
    order = np.lexsort((columns, -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def _tied(rng, rows, dim):
    """Coarse values (many equal scores) and some rows repeated exactly,
    as a collection holding the same photo twice has."""
    candidates = np.round(rng.normal(size=(rows, dim))).astype(np.float32)
    candidates[rows // 2 : rows // 2 + 20] = candidates[:20]
    return candidates


@pytest.mark.parametrize(
    "rows_per_chunk,queries_per_batch", [(1, 1), (7, 3), (64, 256), (10_000, 2)]
)
def test_top_k_is_the_full_sort_whatever_the_chunks(
    rows_per_chunk, queries_per_batch
):
    rng = np.random.default_rng(0)
    candidates = _tied(rng, 300, 4)
    queries = np.round(rng.normal(size=(9, 4))).astype(np.float32)
    indices, scores = nearest.top_k(
        queries,
        candidates,
        10,
        rows_per_chunk=rows_per_chunk,
        queries_per_batch=queries_per_batch,
    )
    expected_indices, expected_scores = _reference(queries, candidates, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


def test_top_k_of_more_than_the_candidates_returns_them_all():
    rng = np.random.default_rng(1)
    candidates = rng.normal(size=(3, 5)).astype(np.float32)
    queries = rng.normal(size=(2, 5)).astype(np.float32)
    indices, _ = nearest.top_k(queries, candidates, 6, rows_per_chunk=2)
    np.testing.assert_array_equal(
        indices, _reference(queries, candidates, 3)[0]
    )


def _chunks(rows, size):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def test_a_memory_mapped_file_is_searched_in_the_memory_of_a_chunk(tmp_path):
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(50_000, 64)).astype(np.float32)  # 12.8 MB
    path = str(tmp_path / "embeddings.npy")
    assert embedding_file.write(path, _chunks(rows, 999), len(rows)) == len(
        rows
    )
    mapped = embedding_file.open_rows(path)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, rows)
    queries = rng.normal(size=(32, 64)).astype(np.float32)
    tracemalloc.start()
    indices, scores = nearest.top_k(queries, mapped, 10, rows_per_chunk=2048)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # A chunk of rows (512 KB) and its scores, not the file (12.8 MB).
    assert peak < rows.nbytes / 8, peak
    expected_indices, expected_scores = _reference(queries, rows, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_rows_dropped_on_the_way_leave_a_file_of_the_exact_size(tmp_path):
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = str(tmp_path / "embeddings.npy")
    assert embedding_file.write(path, _chunks(rows[:7], 3), max_rows=10) == 7
    np.testing.assert_array_equal(np.load(path), rows[:7])


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "embeddings.npy"
    old = np.ones((2, 3), dtype=np.float32)
    embedding_file.write(str(path), [old], max_rows=2)

    def failing():
        yield np.zeros((4, 3), dtype=np.float32)
        raise RuntimeError("the tower failed")

    with pytest.raises(RuntimeError, match="the tower failed"):
        embedding_file.write(str(path), failing(), max_rows=8)
    np.testing.assert_array_equal(np.load(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npy"]


def _clustered(rng, rows, dim, clusters=50):
    """Unit vectors around random centres, queries near those centres: the
    structure an inverted file exploits (real embeddings have it)."""
    centres = rng.normal(size=(clusters, dim))
    members = centres[rng.integers(clusters, size=rows)] + 0.5 * rng.normal(
        size=(rows, dim)
    )
    queries = centres[rng.integers(clusters, size=40)] + 0.5 * rng.normal(
        size=(40, dim)
    )
    return _unit(members), _unit(queries)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_approximate_index_finds_most_of_the_exact_top_k(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    rows, queries = _clustered(rng, 20_000, 32)
    path = str(tmp_path / "embeddings.npy")
    embedding_file.write(path, _chunks(rows, 4096), len(rows))
    index = nearest.ApproximateIndex.build(
        embedding_file.open_rows(path), rows_per_chunk=4096
    )
    # 4 sqrt(N) = 565 lists would learn from fewer than 39 rows each.
    assert index.lists == len(rows) // 39
    exact, exact_scores = nearest.top_k(queries, rows, 10)
    found, scores = index.top_k(queries, 10, nprobe=16)
    assert nearest.recall_at_k(found, exact) >= 0.95
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ rows.T, found, 1), rtol=1e-5
    )
    # Every list probed is the exact scan.
    everything, _ = index.top_k(queries, 10, nprobe=index.lists)
    assert nearest.recall_at_k(everything, exact) == 1.0
    # Saved and loaded, it answers the same.
    index.save(str(tmp_path / "ivf.faiss"))
    again = nearest.ApproximateIndex.load(str(tmp_path / "ivf.faiss"))
    np.testing.assert_array_equal(again.top_k(queries, 10, nprobe=16)[0], found)


def test_an_approximate_query_short_of_k_rows_searches_every_list():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    rows, queries = _clustered(rng, 2_000, 16, clusters=20)
    index = nearest.ApproximateIndex.build(rows, lists=40)
    # One list holds about 50 rows: k = 200 needs more than one.
    found, _ = index.top_k(queries, 200, nprobe=1)
    assert (found >= 0).all()
    np.testing.assert_array_equal(
        np.sort(found, axis=1),
        np.sort(nearest.top_k(queries, rows, 200)[0], axis=1),
    )


def test_the_approximate_index_without_faiss_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(errors.UserError, match="needs faiss.*faiss-cpu"):
        nearest.ApproximateIndex.build(np.ones((100, 4), dtype=np.float32))


def test_recall_at_k_counts_the_exact_hits_found():
    assert (
        nearest.recall_at_k(
            np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 9]])
        )
        == 2 / 6
    )
