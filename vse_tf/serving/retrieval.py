"""Exported towers over an indexed image collection: the one search behind
`python -m vse_tf.search` and `python -m vse_tf.serve`, so both give the
same hits in the same order for a query.

Each tower's newest version (of both, see `saved_model.latest_version`) is
loaded with TensorFlow alone, as a deployment loads it. The collection is
embedded once and cached (`image_index`); a query is scored against every
image exactly, or with index="approximate" against the rows of a faiss
inverted file's nearest lists (`nearest`). `BatchingSearch` runs the
queries of concurrent callers (a server's threads) as one batch.
"""

import concurrent.futures
import queue
import threading

import numpy as np
import tensorflow as tf

from vse_tf import errors
from vse_tf.evaluation import hubness
from vse_tf.serving import image_index
from vse_tf.serving import nearest
from vse_tf.serving import saved_model

TEXTS_PER_BATCH = 256
MAX_BATCH = 32  # queries `BatchingSearch` searches at once


def load_towers(export_dir):
    """(the image tower's version folder, its serving_default signature,
    the text tower's) of the newest version both towers have: the version
    is read once, so that a version published meanwhile cannot pair one
    tower's with the other's."""
    folders = saved_model.version_dirs(export_dir)
    try:
        # BERT text towers exported by releases before `models.wordpiece`
        # hold TF Text's WordPiece ops; today's use core ops only.
        import tensorflow_text  # noqa: F401
    except ImportError:
        pass
    image_serve, text_serve = (
        tf.saved_model.load(folder).signatures["serving_default"]
        for folder in folders
    )
    return folders[0], image_serve, text_serve


def embed_texts(serve_text, texts, batch_size=TEXTS_PER_BATCH):
    """The served text tower's scoring rows of `texts` (see `hubness`)."""
    return np.concatenate(
        [
            hubness.served_text_scoring(
                serve_text(text=tf.constant(texts[i : i + batch_size]))
            )
            for i in range(0, len(texts), batch_size)
        ]
    )


def embed_image(serve_bytes, image_bytes, name):
    """The served image tower's scoring row of one encoded image, [1, D']."""
    try:
        return hubness.served_image_scoring(
            serve_bytes(image_bytes=tf.constant([image_bytes]))
        )
    except tf.errors.InvalidArgumentError as error:
        raise errors.UserError(f"{name!r} is not a JPEG or PNG image.") from (
            error
        )


class ImageSearch:
    """Text queries against an image collection, and captions for its
    images.

    Args:
      export_dir: the folder holding image_tower/ and text_tower/.
      images: a folder of JPEG/PNG files or DATASET:SPLIT.
      data_dir: the datasets' root, for a split.
      index_dir: where the embeddings are cached (default under
        export_dir, see `image_index.default_index_dir`).
      index: "exact" or "approximate".
      nprobe: the lists an approximate query scans.
      on_bad_image: "skip" an image the tower cannot decode, or "error".
    """

    def __init__(
        self,
        export_dir,
        images,
        data_dir=None,
        index_dir=None,
        index="exact",
        nprobe=nearest.NPROBE,
        on_bad_image="skip",
    ):
        errors.check_choice("--index", index, ("exact", "approximate"))
        if index == "approximate":
            nearest.require_faiss()  # before the towers load, images embed
        image_dir, self.serve_bytes, self.serve_text = load_towers(export_dir)
        collection = image_index.open_collection(images, data_dir)
        self.index_dir = index_dir or image_index.default_index_dir(
            export_dir, collection
        )
        self.embeddings, self.cached, self.collection = (
            image_index.load_or_build(
                collection,
                self.serve_bytes,
                image_dir,
                self.index_dir,
                on_bad_image,
            )
        )
        self.nprobe = nprobe
        self.approximate = (
            image_index.load_or_build_approximate(
                self.embeddings, self.index_dir, rebuild=not self.cached
            )
            if index == "approximate"
            else None
        )

    def search(self, queries, k):
        """(indices [Q, k'], scores [Q, k']) of the best images of each
        query, best first; k' = min(k, the collection's size)."""
        query_embeddings = embed_texts(self.serve_text, list(queries))
        if self.approximate:
            return self.approximate.top_k(query_embeddings, k, self.nprobe)
        return nearest.top_k(query_embeddings, self.embeddings, k)

    def rank_captions(self, image_rows, caption_embeddings, k):
        """(indices, scores) of the best of `caption_embeddings` (from
        `embed_texts`) for the images at indices `image_rows`."""
        images = np.asarray(self.embeddings[list(image_rows)], np.float32)
        return nearest.top_k(images, caption_embeddings, k)


class BatchingSearch:
    """`ImageSearch.search` for concurrent callers, one query each, run
    together: a worker thread takes every query waiting (up to max_batch)
    as one batch, so the text tower and the scan run once for all of them.
    A query that finds nobody waiting is searched at once, alone. A text
    tower embeds several captions for little more than one: under 8
    clients the Flickr8k page answers 92 queries a second batched, 41 one
    at a time (BENCHMARKS.md).

    Each caller gets its own query's hits, the top `k` of the batch's
    largest k: the same as alone, since a query's ranking does not depend
    on the others (exact and approximate alike).
    """

    def __init__(self, search, max_batch=MAX_BATCH):
        self.search = search
        self.max_batch = max_batch
        self.waiting = queue.SimpleQueue()
        threading.Thread(target=self._work, daemon=True).start()

    def __call__(self, query, k):
        """(indices [k'], scores [k']) of `query`'s best images."""
        answer = concurrent.futures.Future()
        self.waiting.put((query, k, answer))
        return answer.result()

    def _next_batch(self):
        batch = [self.waiting.get()]
        while len(batch) < self.max_batch:
            try:
                batch.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        return batch

    def _work(self):
        while True:
            batch = self._next_batch()
            try:
                indices, scores = self.search.search(
                    [query for query, _, _ in batch],
                    max(k for _, k, _ in batch),
                )
            except Exception as error:  # the callers' to raise
                for _, _, answer in batch:
                    answer.set_exception(error)
                continue
            for row, (_, k, answer) in enumerate(batch):
                answer.set_result((indices[row, :k], scores[row, :k]))
