"""An image collection embedded once by an exported image tower, cached.

A collection is a folder of JPEG/PNG files or a dataset split
("flickr8k:test", "csv:photos.csv:test", "shapes:test"), its images named
by their file names where the dataset keeps files. Its embeddings are
kept as `embeddings.npy` beside a `manifest.json` naming the tower and
every image (with size and mtime for files); the next search reuses them
while both match, and embeds again when an image is added, removed or
changed, or the tower is re-exported.
The embeddings file is written a batch at a time and read memory-mapped
(`embedding_file`), so a collection of a million images is indexed and
searched without holding it in memory.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
from typing import Callable

import tensorflow as tf
from tqdm import tqdm

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.evaluation import hubness
from vse_tf.serving import embedding_file
from vse_tf.serving import nearest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EMBEDDINGS = "embeddings.npy"
MANIFEST = "manifest.json"
APPROXIMATE = "ivf.faiss"


@dataclasses.dataclass
class Collection:
    """Images to search: their names, a fingerprint, and a byte reader."""

    source: str
    names: list
    fingerprint: list
    read: Callable[[int], bytes]  # index -> encoded image bytes

    def __len__(self):
        return len(self.names)

    def subset(self, kept):
        """The collection of the images at indices `kept` only."""
        return Collection(
            self.source,
            [self.names[i] for i in kept],
            [self.fingerprint[i] for i in kept],
            lambda index: self.read(kept[index]),
        )


def open_collection(spec, data_dir=None):
    """A folder path, or DATASET:SPLIT such as "shapes:test"."""
    if os.path.isdir(spec):
        return _folder(spec)
    if ":" in spec and not os.path.exists(spec):
        return _split(spec, data_dir)
    raise errors.UserError(
        f"--images={spec!r} is neither a folder of JPEG/PNG images nor a "
        "dataset split written DATASET:SPLIT (e.g. shapes:test)."
    )


def _folder(path):
    path = os.path.abspath(path)
    names = sorted(
        name
        for name in os.listdir(path)
        if name.lower().endswith(IMAGE_SUFFIXES)
        and os.path.isfile(os.path.join(path, name))
    )
    if not names:
        raise errors.UserError(
            f"No images in {path!r}: expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}."
        )
    stats = [os.stat(os.path.join(path, name)) for name in names]
    fingerprint = [
        [name, s.st_size, s.st_mtime_ns] for name, s in zip(names, stats)
    ]

    def read(index):
        with open(os.path.join(path, names[index]), "rb") as f:
            return f.read()

    return Collection(path, names, fingerprint, read)


def _split(spec, data_dir):
    from vse_tf.data import pipeline  # TFDS only when a split is asked for

    dataset, split = spec.rsplit(":", 1)
    stored = pipeline.stored_photos(dataset, split, data_dir)
    if stored:
        # The photos as stored, named by their files.
        names, read = stored
        return Collection(spec, names, names, read)
    examples = pipeline.load_examples(dataset, split, data_dir)
    encoded = examples.map(
        lambda e: (tf.io.encode_png(e["image"]), e["image_id"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images, ids = [], []
    for png, image_id in encoded.as_numpy_iterator():
        images.append(png)
        ids.append(int(image_id))
    # A TFDS split keeps pixels, not files: an image is named by its id.
    names = [f"{spec}/{image_id}" for image_id in ids]
    return Collection(spec, names, names, images.__getitem__)


def default_index_dir(export_dir, collection):
    """EXPORT/search_index/<readable name>-<hash of the source>."""
    slug = re.sub(r"[^\w.-]+", "_", collection.source).strip("_")[-40:]
    digest = hashlib.sha1(collection.source.encode()).hexdigest()[:8]
    return os.path.join(export_dir, "search_index", f"{slug}-{digest}")


def _tower_identity(tower_dir):
    stat = os.stat(os.path.join(tower_dir, "saved_model.pb"))
    return [os.path.abspath(tower_dir), stat.st_size, stat.st_mtime_ns]


def embed_images(
    serve_bytes,
    collection,
    bad,
    batch_size=64,
    progress=True,
    on_bad_image="skip",
):
    """Yields the embeddings of every image the tower decodes, a batch at
    a time, in collection order ([n, D], or [n, D + 2] with their hubness
    where the tower serves one: see `hubness.image_scoring`), and files
    those it does not in `bad`, {index: reason}. With on_bad_image="error"
    one is a UserError that names the file."""
    errors.check_choice("--on_bad_image", on_bad_image, ("skip", "error"))
    starts = range(0, len(collection), batch_size)
    for start in tqdm(
        starts,
        desc="Embedding images",
        unit="batch",
        disable=None if progress else True,
    ):
        indices = range(start, min(start + batch_size, len(collection)))
        batch = [collection.read(i) for i in indices]
        try:
            yield hubness.served_image_scoring(
                serve_bytes(image_bytes=tf.constant(batch))
            )
            continue
        except tf.errors.InvalidArgumentError:
            pass
        # One image at a time, to name the file(s) the batch failed on.
        for index, encoded in zip(indices, batch):
            try:
                yield hubness.served_image_scoring(
                    serve_bytes(image_bytes=tf.constant([encoded]))
                )
            except tf.errors.InvalidArgumentError as error:
                reason = error.message.splitlines()[0]
                if on_bad_image == "error":
                    raise errors.UserError(
                        f"The image {collection.names[index]!r} could not "
                        f"be decoded ({reason}). Replace or remove it, or "
                        "pass --on_bad_image=skip."
                    ) from error
                bad[index] = reason
    if len(bad) == len(collection):
        raise errors.UserError(
            f"None of the {len(collection)} images in "
            f"{collection.source!r} could be decoded, e.g. "
            f"{collection.names[0]!r} ({bad[0]})."
        )


def load_or_build(
    collection, serve_bytes, tower_dir, index_dir, on_bad_image="skip"
):
    """(embeddings [N', D] memory-mapped, whether they came from the
    cache, the collection of the N' images they embed): images the tower
    cannot decode are skipped, counted and named (see `embed_images`).
    The embeddings go to disk a batch at a time, so a collection of any
    size is indexed in the memory of one batch."""
    manifest = {
        "source": collection.source,
        "image_tower": _tower_identity(tower_dir),
        "images": collection.fingerprint,
    }
    manifest_path = os.path.join(index_dir, MANIFEST)
    embeddings_path = os.path.join(index_dir, EMBEDDINGS)
    if os.path.exists(manifest_path) and os.path.exists(embeddings_path):
        with open(manifest_path, encoding="utf-8") as f:
            cached = json.load(f)
        skipped = cached.pop("skipped", [])
        if cached == json.loads(json.dumps(manifest)) and not (
            skipped and on_bad_image == "error"
        ):
            kept = _kept(collection, skipped)
            embeddings = embedding_file.open_rows(embeddings_path)
            if len(embeddings) == len(kept):
                _report_skipped(collection, skipped, "cached")
                return embeddings, True, kept
    # Checked before the images are embedded (minutes for a large
    # collection), and removed again if they fail: an index dir exists
    # only with an index in it.
    created = not os.path.exists(index_dir)
    io_utils.ensure_writable_dir(index_dir, "index dir")
    bad = {}
    try:
        # Embeddings first, manifest last: a crash in between leaves a
        # manifest that no longer matches, so the next search rebuilds.
        embedding_file.write(
            embeddings_path,
            embed_images(
                serve_bytes, collection, bad, on_bad_image=on_bad_image
            ),
            max_rows=len(collection),
        )
    except BaseException:
        if created:
            shutil.rmtree(index_dir, ignore_errors=True)
        raise
    skipped = [collection.names[i] for i in sorted(bad)]
    manifest["skipped"] = skipped
    _report_skipped(collection, skipped, "", bad)
    io_utils.write_json_atomic(manifest_path, manifest)
    return (
        embedding_file.open_rows(embeddings_path),
        False,
        _kept(collection, skipped),
    )


def load_or_build_approximate(embeddings, index_dir, rebuild):
    """The faiss index over `embeddings` (see `nearest.ApproximateIndex`),
    kept beside them: built again when they were, or when it does not
    hold as many rows."""
    path = os.path.join(index_dir, APPROXIMATE)
    if os.path.exists(path) and not rebuild:
        index = nearest.ApproximateIndex.load(path)
        if len(index) == len(embeddings):
            return index
    # k-means over the sample takes minutes at a million rows.
    print(
        f"Building the approximate index of {len(embeddings):,} images "
        "(k-means lists, then the rows) ...",
        flush=True,
    )
    index = nearest.ApproximateIndex.build(
        embeddings, progress="Approximate index"
    )
    with io_utils.atomic_path(path) as tmp:
        index.save(tmp)
    return index


def _kept(collection, skipped):
    skipped = set(skipped)
    return collection.subset(
        [i for i, name in enumerate(collection.names) if name not in skipped]
    )


def _report_skipped(collection, skipped, how, reasons=None):
    if not skipped:
        return
    reasons = reasons or {}
    first = collection.names.index(skipped[0])
    reason = f" ({reasons[first]})" if first in reasons else ""
    listed = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
    print(
        f"Skipped {len(skipped)} of {len(collection)} images that could "
        f"not be decoded{' (' + how + ' index)' if how else ''}: "
        f"{listed}{reason}."
    )
