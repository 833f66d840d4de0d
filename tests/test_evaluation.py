"""retrieval_metrics against brute-force references and by hand.

Two references: VSE++'s argsort loop, which agrees with vse_tf wherever
no two scores tie, and a pessimistic brute-force count on integer
embeddings (exact scores), which defines what a tie does: it counts against
the truth.
"""

import numpy as np
import pytest

from tests.conftest import pessimistic_ranks
from vse_tf import evaluation


def reference_ranks(images, texts, captions_per_image):
    """The VSE++ evaluation loop: a full argsort for every query."""
    n = len(images)
    i2t = np.zeros(n, dtype=int)
    for i in range(n):
        order = np.argsort(images[i] @ texts.T)[::-1]
        i2t[i] = min(
            np.where(order == j)[0][0]
            for j in range(captions_per_image * i, captions_per_image * (i + 1))
        )
    t2i = np.zeros(len(texts), dtype=int)
    for j in range(len(texts)):
        order = np.argsort(texts[j] @ images.T)[::-1]
        t2i[j] = np.where(order == j // captions_per_image)[0][0]
    return i2t, t2i


def reference_metrics(images, texts, captions_per_image=5):
    i2t, t2i = reference_ranks(images, texts, captions_per_image)
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = (
                100.0 * len(np.where(ranks < k)[0]) / len(ranks)
            )
        out[f"{name}_medr"] = np.floor(np.median(ranks)) + 1
        out[f"{name}_meanr"] = ranks.mean() + 1
    out["rsum"] = sum(
        out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)
    )
    return out


def _embeddings(rng, n, d=16, captions_per_image=5, signal=1.5):
    # Captions near their image so the ranks spread over 1..n, not all high.
    images = rng.normal(size=(n, d)).astype(np.float32)
    texts = (
        np.repeat(images, captions_per_image, axis=0) * signal
        + rng.normal(size=(n * captions_per_image, d))
    ).astype(np.float32)
    return images, texts


@pytest.mark.parametrize(
    "n,captions_per_image,chunk",
    [(60, 5, 7), (33, 5, 512), (40, 1, 16), (25, 3, 4)],
)
def test_ranks_match_argsort_reference(n, captions_per_image, chunk):
    images, texts = _embeddings(
        np.random.default_rng(n), n, captions_per_image=captions_per_image
    )
    i2t, t2i = evaluation.retrieval_ranks(
        images, texts, captions_per_image, chunk_size=chunk
    )
    ref_i2t, ref_t2i = reference_ranks(images, texts, captions_per_image)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)


@pytest.mark.parametrize(
    "n,captions_per_image,chunk", [(40, 5, 512), (40, 5, 7), (23, 3, 4)]
)
def test_ties_count_against_the_truth(n, captions_per_image, chunk):
    rng = np.random.default_rng(n)
    images, texts = _tied_embeddings(rng, np.full(n, captions_per_image))
    ref_i2t, ref_t2i = _ranks_equal_the_pessimistic_count(
        images, texts, captions_per_image, chunk
    )
    # The data has ties that decide ranks: an argsort would differ.
    argsort_i2t, argsort_t2i = reference_ranks(
        images, texts, captions_per_image
    )
    assert (argsort_i2t < ref_i2t).any() and (argsort_t2i < ref_t2i).any()


@pytest.mark.parametrize("chunk", [512, 7, 3])
def test_any_number_of_captions_per_image_with_ties(chunk):
    # 1 to 7 captions an image, as one's own data has.
    rng = np.random.default_rng(chunk)
    counts = rng.integers(1, 8, size=41)
    images, texts = _tied_embeddings(rng, counts)
    ref_i2t, ref_t2i = _ranks_equal_the_pessimistic_count(
        images, texts, counts, chunk
    )
    assert (ref_i2t > 0).any() and (ref_t2i > 0).any()


def _tied_embeddings(rng, counts):
    """Embeddings in {-1, 0, 1}^4, counts[i] captions for image i: integer
    scores with many exact ties, and repeated captions, as Flickr8k
    repeats caption strings across images."""
    images = rng.integers(-1, 2, size=(len(counts), 4))
    texts = np.repeat(images, counts, axis=0)
    noisy = rng.random(len(texts)) < 0.6
    texts[noisy] = rng.integers(-1, 2, size=(noisy.sum(), 4))
    texts[1::7] = texts[0]
    return images, texts


def _ranks_equal_the_pessimistic_count(images, texts, counts, chunk):
    """Asserts vse_tf's ranks equal the float64 brute force; returns it."""
    i2t, t2i = evaluation.retrieval_ranks(
        images.astype(np.float32),
        texts.astype(np.float32),
        counts,
        chunk_size=chunk,
    )
    ref_i2t, ref_t2i = pessimistic_ranks(images, texts, counts)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)
    return ref_i2t, ref_t2i


def test_a_count_per_image_of_five_is_the_fixed_protocol_exactly():
    images, texts = _embeddings(np.random.default_rng(5), 50)
    fixed = evaluation.retrieval_metrics(images, texts, 5, folds=5)
    counted = evaluation.retrieval_metrics(
        images, texts, np.full(50, 5), folds=5
    )
    assert fixed == counted


def test_folds_of_uneven_caption_counts_take_each_image_its_own():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 6, size=20)
    images, _ = _embeddings(rng, 20)
    texts = np.repeat(images, counts, axis=0) + 0.3 * rng.standard_normal(
        (counts.sum(), images.shape[1])
    ).astype(np.float32)
    folds = evaluation.retrieval_metrics(images, texts, counts, folds=2)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    halves = [
        evaluation.retrieval_metrics(
            images[a:b], texts[offsets[a] : offsets[b]], counts[a:b]
        )
        for a, b in ((0, 10), (10, 20))
    ]
    for name in evaluation.METRIC_NAMES:
        assert folds[name] == pytest.approx(
            (halves[0][name] + halves[1][name]) / 2
        )


@pytest.mark.parametrize("counts", [[2, 0, 3], [2, 3]])
def test_an_image_without_captions_or_a_wrong_count_is_an_error(counts):
    images = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="captions_per_image"):
        evaluation.retrieval_ranks(
            images, np.eye(5, 3, dtype=np.float32), counts
        )


@pytest.mark.parametrize("chunk", [16, 512])
@pytest.mark.parametrize("dim", [256, 1024, 8192, 16384])
def test_exact_ties_of_real_valued_embeddings_count_at_any_dimension(
    dim, chunk
):
    # Unit float32 vectors, as towers give them, with exact ties: the same
    # photo twice (its captions tie between the two) and captions repeated
    # across images (Flickr8k repeats caption strings). The truth's score
    # and a tied candidate's come out of float32 products that round them
    # differently; the exact float64 reference says which tie.
    rng = np.random.default_rng(dim)
    n, captions_per_image = 40, 5
    images = rng.normal(size=(n, dim))
    images[1::8] = images[0::8]
    texts = np.repeat(images, captions_per_image, axis=0) + rng.normal(
        size=(n * captions_per_image, dim)
    )
    for i in range(n):  # image i's first caption is image i+1's second
        texts[captions_per_image * ((i + 1) % n) + 1] = texts[
            captions_per_image * i
        ]
    images, texts = (
        (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        for x in (images, texts)
    )
    # Chunks of 16 or all 40 images against the truths' blocks of 32 and
    # 8 (evaluation.TRUTH_ROWS): products of other shapes.
    i2t, t2i = evaluation.retrieval_ranks(
        images, texts, captions_per_image, chunk_size=chunk
    )
    ref_i2t, ref_t2i = pessimistic_ranks(images, texts, captions_per_image)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)
    # The ties decide ranks: counted for the truth they would differ.
    optimistic = pessimistic_ranks(images, texts, captions_per_image, tie=-1e-9)
    assert (optimistic[0] < ref_i2t).sum() >= 5
    assert (optimistic[1] < ref_t2i).sum() >= 10


@pytest.mark.parametrize("n,chunk", [(200, 512), (1030, 512), (300, 64)])
@pytest.mark.parametrize("value", ["constant", "zero"])
def test_a_collapsed_model_ranks_every_truth_last(n, chunk, value):
    rng = np.random.default_rng(0)
    row = rng.normal(size=(1, 256)).astype(np.float32)
    row = row / np.linalg.norm(row) if value == "constant" else 0 * row
    i2t, t2i = evaluation.retrieval_ranks(
        np.repeat(row, n, axis=0),
        np.repeat(row, 5 * n, axis=0),
        chunk_size=chunk,
    )
    assert (i2t == 5 * (n - 1)).all() and (t2i == n - 1).all()
    metrics = evaluation.metrics_from_ranks(i2t, t2i)
    assert metrics["rsum"] == 0.0


@pytest.mark.parametrize("side", ["image", "caption"])
def test_non_finite_embeddings_are_refused(side):
    images, texts = _embeddings(np.random.default_rng(2), 10)
    bad = images if side == "image" else texts
    bad[3, 0] = np.nan
    bad[7, 2] = np.inf
    with pytest.raises(
        ValueError, match=f"2 of {len(bad)} {side} embeddings are not finite"
    ):
        evaluation.retrieval_metrics(images, texts)


def test_metrics_match_reference():
    images, texts = _embeddings(np.random.default_rng(0), 100)
    metrics = evaluation.retrieval_metrics(images, texts)
    expected = reference_metrics(images, texts)
    assert set(metrics) == set(evaluation.METRIC_NAMES)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name
    # Not a degenerate case: recalls are neither 0 nor 100.
    assert 0 < metrics["i2t_r1"] < 100 and 0 < metrics["t2i_r10"] < 100


def test_five_folds_average_each_fold():
    images, texts = _embeddings(np.random.default_rng(1), 50)
    folds = evaluation.retrieval_metrics(images, texts, folds=5)
    per_fold = [
        reference_metrics(
            images[10 * f : 10 * (f + 1)], texts[50 * f : 50 * (f + 1)]
        )
        for f in range(5)
    ]
    for name in evaluation.METRIC_NAMES:
        assert folds[name] == pytest.approx(
            np.mean([m[name] for m in per_fold])
        ), name
    # Folds rank among fewer candidates, so recall can only rise.
    whole = evaluation.retrieval_metrics(images, texts)
    assert folds["rsum"] >= whole["rsum"]


def test_hand_computed_example():
    # Two images, two captions each, in 2-D.
    images = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    texts = np.array(
        [
            [0.9, 0.1],  # image 0's, ranks first for image 0
            [0.0, 1.0],  # image 0's, but looks like image 1
            [0.2, 0.8],  # image 1's
            [0.95, 0.0],
        ],  # image 1's, but looks like image 0
        np.float32,
    )
    i2t, t2i = evaluation.retrieval_ranks(images, texts, captions_per_image=2)
    # Image 0 scores captions 3 (0.95) > 0 (0.9): best own rank 1.
    # Image 1 scores 1 (1.0) > 2 (0.8): best own caption 2 is at rank 1.
    np.testing.assert_array_equal(i2t, [1, 1])
    # Captions 0, 2 find their image first; 1 and 3 find the other one.
    np.testing.assert_array_equal(t2i, [0, 1, 0, 1])
    metrics = evaluation.metrics_from_ranks(i2t, t2i)
    assert metrics["i2t_r1"] == 0.0 and metrics["i2t_r5"] == 100.0
    assert metrics["t2i_r1"] == 50.0 and metrics["rsum"] == 450.0
    assert metrics["i2t_medr"] == 2.0 and metrics["t2i_meanr"] == 1.5


def test_wrong_caption_count_is_an_error():
    with pytest.raises(ValueError, match="5 captions per image"):
        evaluation.retrieval_metrics(np.zeros((3, 4)), np.zeros((14, 4)))


def test_unequal_folds_are_an_error():
    with pytest.raises(ValueError, match="equal folds"):
        evaluation.retrieval_metrics(
            np.zeros((12, 4)), np.zeros((60, 4)), folds=5
        )


def test_table_shows_every_recall():
    metrics = dict.fromkeys(evaluation.METRIC_NAMES, 12.345)
    table = evaluation.format_table(metrics, title="test")
    assert table.splitlines()[0] == "test"
    assert "image->text" in table and "text->image" in table
    assert table.count("12.3") >= 7


def test_paper_row_lists_recalls_both_ways_then_rsum():
    metrics = {
        f"{d}_r{k}": 10.0 * i + k
        for i, d in enumerate(("i2t", "t2i"))
        for k in (1, 5, 10)
    }
    metrics["rsum"] = sum(metrics.values())
    header, columns, row = evaluation.format_paper_row(
        metrics, "coco1k"
    ).splitlines()
    assert "image -> text" in header and "text -> image" in header
    assert columns.split() == ["R@1", "R@5", "R@10"] * 2 + ["rsum"]
    assert row.split() == [
        "coco1k",
        "1.0",
        "5.0",
        "10.0",
        "11.0",
        "15.0",
        "20.0",
        "62.0",
    ]


def test_protocols_check_the_test_size():
    assert evaluation.check_protocol("coco1k", 5000).folds == 5
    assert evaluation.check_protocol("coco5k", 5000).folds == 1
    with pytest.raises(ValueError, match="needs 1000 test images"):
        evaluation.check_protocol("f30k", 5000)
    with pytest.raises(ValueError, match="Unknown protocol"):
        evaluation.check_protocol("coco", 5000)
