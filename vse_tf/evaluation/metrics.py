"""Cross-modal Recall@K, the field's protocol, exact and memory-bounded.

N images and their captions, in image order: the field's fixed
captions_per_image (5: caption j belongs to image j // 5), or any count
per image, at least one (a dataset of one's own). The image->text rank of
image i is the best rank of its own captions among all captions; the
text->image rank of caption j is the rank of its image among all images.
A rank is a count, so no query needs a sort, and each score is computed
once, a chunk of image rows at a time:

  image->text: the other images' captions that score at least as high as
               the image's best-scoring own caption;
  text->image: the other images that score at least as high with the
               caption as its own image.

Ties count against the truth. An argsort (VSE++'s evaluation loop) breaks
ties arbitrarily, and counting only strictly higher candidates breaks all of
them for the truth: a collapsed model, every embedding equal, would then rank
every truth first and score rsum 600. Here it ranks every truth last.

A candidate ties the truth when the two scores agree to float32 precision:
within TIE_TOLERANCE times the largest image norm times the largest caption
norm (about 1e-6 for unit vectors). A float32 matrix product rounds a score
by a few 1e-7, and rounds two equal scores differently depending on where
they sit in the product, so closer scores cannot be told apart. The truth's
score is taken from the same routine as its candidates', a matrix product
of the same image rows (a chunk against its own captions, a small fraction
of the work), never from another routine: an einsum sums in another order,
and at large D its rounding differs from the product's by more than the
tolerance (1.25 times it at D = 16,384). NumPy's BLAS sums each score
over D in an order that does not depend on the other rows and columns
(measured bit for bit up to D = 16,384), and tests/test_evaluation.py
checks exact ties at D = 256 to 16,384 on the machine it runs on.
"""

import collections

import numpy as np

METRIC_NAMES = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "rsum",
    "i2t_medr",
    "i2t_meanr",
    "t2i_medr",
    "t2i_meanr",
)
RECALL_AT = (1, 5, 10)
TIE_TOLERANCE = 2.0**-20
# Images a block of the truths' product (see `_truth_scores`).
TRUTH_ROWS = 32

Protocol = collections.namedtuple("Protocol", "split folds images summary")
# The field's test protocols (Karpathy splits).
PROTOCOLS = {
    "coco1k": Protocol(
        "test",
        5,
        5000,
        "MS-COCO 1K: the mean over five folds of 1,000 test images",
    ),
    "coco5k": Protocol("test", 1, 5000, "MS-COCO 5K: all 5,000 test images"),
    "f30k": Protocol("test", 1, 1000, "Flickr30K: the 1,000 test images"),
}


def check_protocol(name, num_images):
    """The protocol called `name`, if it applies to `num_images` images."""
    if name not in PROTOCOLS:
        raise ValueError(
            f"Unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}."
        )
    protocol = PROTOCOLS[name]
    if num_images != protocol.images:
        raise ValueError(
            f"The {name} protocol ({protocol.summary}) needs "
            f"{protocol.images} {protocol.split} images; this dataset's "
            f"{protocol.split} split has {num_images}. Score it with "
            "--split and --folds instead, or evaluate the dataset the "
            "protocol is for."
        )
    return protocol


class NonFiniteEmbeddings(ValueError):
    """Embeddings holding a NaN or an infinity: a diverged model's."""


def check_finite(embeddings, what):
    """Raises NonFiniteEmbeddings naming how many rows of `embeddings` hold
    a NaN or an infinity: they cannot be ranked, and NaN compares unequal
    to all."""
    bad = int(np.count_nonzero(~np.isfinite(embeddings).all(axis=1)))
    if bad:
        raise NonFiniteEmbeddings(
            f"{bad} of {len(embeddings)} {what} embeddings are not finite "
            "(NaN or infinity), so they cannot be ranked. A model whose "
            "training diverged produces them; score an earlier checkpoint."
        )


def caption_offsets(captions_per_image, num_images):
    """[N + 1] offsets: image i's captions are rows offsets[i] to
    offsets[i + 1] - 1. `captions_per_image` is one count for every image
    (the field's 5) or a count per image, each at least 1."""
    counts = np.asarray(captions_per_image, dtype=np.int64)
    if counts.ndim == 0:
        counts = np.full(num_images, counts, np.int64)
    if counts.shape != (num_images,) or (num_images and counts.min() < 1):
        raise ValueError(
            f"captions_per_image must be one count or {num_images} counts "
            f"(one per image), each at least 1; got {captions_per_image!r}."
        )
    return np.concatenate([[0], np.cumsum(counts)])


def retrieval_ranks(
    image_embeddings, text_embeddings, captions_per_image=5, chunk_size=512
):
    """0-based ranks, ties against the truth: (i2t [N], t2i [M]).

    `captions_per_image` is one count (caption j belongs to image j // C)
    or a count per image (image i's captions follow image i - 1's).
    """
    images = np.ascontiguousarray(image_embeddings, dtype=np.float32)
    texts = np.ascontiguousarray(text_embeddings, dtype=np.float32)
    num_images = images.shape[0]
    offsets = caption_offsets(captions_per_image, num_images)
    _check_caption_count(len(texts), offsets, captions_per_image)
    check_finite(images, "image")
    check_finite(texts, "caption")
    if num_images == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tolerance = TIE_TOLERANCE * np.sqrt(
        np.einsum("id,id->i", images, images).max()
        * np.einsum("jd,jd->j", texts, texts).max()
    )
    owner = np.repeat(np.arange(num_images), np.diff(offsets))
    chunks = [
        (start, min(start + chunk_size, num_images))
        for start in range(0, num_images, chunk_size)
    ]

    # Each caption's score with its own image, and what a candidate must
    # reach to rank above it or tie it: for a caption, its own score; for
    # an image, its best own caption's.
    positive = _truth_scores(images, texts, offsets, owner)
    t2i_bar = positive - tolerance
    i2t_bar = np.maximum.reduceat(positive, offsets[:-1]) - tolerance
    i2t = np.empty(num_images, dtype=np.int64)
    t2i = np.zeros(texts.shape[0], dtype=np.int64)
    # One buffer for every chunk's scores: a fresh 50 MB array a chunk
    # costs its page faults each time.
    buffer = np.empty((chunks[0][1], texts.shape[0]), np.float32)
    for start, stop in chunks:
        scores = np.matmul(
            images[start:stop], texts.T, out=buffer[: stop - start]
        )
        first, last = offsets[start], offsets[stop]
        own = _own_scores(scores[:, first:last], first, last, owner, start)
        # Own captions are no competitors, nor is an image for its own
        # captions: count all, then take out what they added.
        i2t[start:stop] = _count(
            scores >= i2t_bar[start:stop, None], axis=1
        ) - np.bincount(
            owner[first:last] - start,
            own >= i2t_bar[owner[first:last]],
            minlength=stop - start,
        ).astype(np.int64)
        t2i += _count(scores >= t2i_bar, axis=0)
        t2i[first:last] -= own >= t2i_bar[first:last]
    return i2t, t2i


def _count(reached, axis):
    """np.count_nonzero(reached, axis) in half its time: the booleans'
    bytes summed as int32 (a count never nears 2**31)."""
    return np.add.reduce(reached.view(np.uint8), axis=axis, dtype=np.int32)


def _check_caption_count(num_texts, offsets, captions_per_image):
    if num_texts != offsets[-1]:
        counted = (
            f"{captions_per_image} captions per image"
            if np.ndim(captions_per_image) == 0
            else "the given count per image"
        )
        raise ValueError(
            f"Expected {offsets[-1]} caption embeddings for "
            f"{len(offsets) - 1} images ({counted}); got {num_texts}."
        )


def _own_scores(scores, first, last, owner, first_image):
    """[last - first]: captions first to last - 1 with their own images,
    from `scores` of the images from `first_image` on (rows) against
    captions first to last - 1 (columns)."""
    columns = np.arange(last - first)
    return scores[owner[first:last] - first_image, columns]


def _truth_scores(images, texts, offsets, owner, rows=TRUTH_ROWS):
    """[M]: each caption's score with its own image, from a product of
    each `rows` images with their own captions alone (a small block:
    the work is rows times the truths it yields)."""
    blocks = [
        (start, min(start + rows, len(images)))
        for start in range(0, len(images), rows)
    ]
    return np.concatenate(
        [
            _own_scores(
                images[start:stop] @ texts[offsets[start] : offsets[stop]].T,
                offsets[start],
                offsets[stop],
                owner,
                start,
            )
            for start, stop in blocks
        ]
    )


def metrics_from_ranks(i2t_ranks, t2i_ranks):
    """Recall@K in percent, rsum, median and mean rank (1-based)."""
    metrics = {}
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in RECALL_AT:
            metrics[f"{direction}_r{k}"] = 100.0 * float(np.mean(ranks < k))
        metrics[f"{direction}_medr"] = float(np.floor(np.median(ranks))) + 1
        metrics[f"{direction}_meanr"] = float(np.mean(ranks)) + 1
    metrics["rsum"] = sum(
        metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_AT
    )
    return {name: metrics[name] for name in METRIC_NAMES}


def retrieval_metrics(
    image_embeddings, text_embeddings, captions_per_image=5, folds=1
):
    """Metrics of `METRIC_NAMES`; folds=5 on 5,000 images is COCO 1K.

    `captions_per_image`: one count, or a count per image (see
    `retrieval_ranks`).

    With folds > 1 the images (and their captions) are cut into equal
    consecutive folds, each ranked on its own, and every metric is the mean
    over folds.
    """
    num_images = len(image_embeddings)
    if folds < 1 or num_images % folds:
        raise ValueError(
            f"Cannot cut {num_images} images into {folds} equal folds."
        )
    fold_size = num_images // folds
    offsets = caption_offsets(captions_per_image, num_images)
    _check_caption_count(len(text_embeddings), offsets, captions_per_image)
    counts = np.diff(offsets)
    per_fold = []
    for fold in range(folds):
        first, last = fold * fold_size, (fold + 1) * fold_size
        images = image_embeddings[first:last]
        texts = text_embeddings[offsets[first] : offsets[last]]
        ranks = retrieval_ranks(images, texts, counts[first:last])
        per_fold.append(metrics_from_ranks(*ranks))
    return {
        name: float(np.mean([m[name] for m in per_fold]))
        for name in METRIC_NAMES
    }


def format_table(metrics, title=None):
    """The papers' layout: R@1 R@5 R@10 medr per direction, then rsum."""
    lines = [title] if title else []
    lines.append(
        f"{'':14}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'medr':>8}{'meanr':>9}"
    )
    for direction, label in (("i2t", "image->text"), ("t2i", "text->image")):
        lines.append(
            f"{label:14}"
            + "".join(f"{metrics[f'{direction}_r{k}']:8.1f}" for k in RECALL_AT)
            + f"{metrics[f'{direction}_medr']:8.0f}"
            f"{metrics[f'{direction}_meanr']:9.1f}"
        )
    lines.append(f"{'rsum':14}{metrics['rsum']:8.1f}")
    return "\n".join(lines)


def format_paper_row(metrics, label):
    """One line in the layout of the papers' tables: R@1 R@5 R@10 image to
    text, the same text to image, then rsum; with its header."""
    header = (
        f"{'':12}{'image -> text':^21}  {'text -> image':^21}\n"
        f"{'':12}" + f"{'R@1':>7}{'R@5':>7}{'R@10':>7}" * 2 + f"{'rsum':>9}"
    )
    row = (
        f"{label:12}"
        + "".join(
            f"{metrics[f'{d}_r{k}']:7.1f}"
            for d in ("i2t", "t2i")
            for k in RECALL_AT
        )
        + f"{metrics['rsum']:9.1f}"
    )
    return f"{header}\n{row}"
