"""Embeddings on disk as one .npy file, written in chunks, read mapped.

A million images of 512 float32 dimensions are 2 GB: more than a search
should hold in memory, and more than one process should build in memory
before it writes. `write` fills a memory-mapped file chunk by chunk (the
chunks come from a generator, so neither side holds the whole), renaming
it into place only once complete; `open_rows` maps it back without
reading it, so that a search reads the rows it scores and the page cache,
not the process, keeps them.
"""

import numpy as np
from tqdm import tqdm

from vse_tf import io_utils

COPY_ROWS = 65_536  # rows a copy moves at a time: 128 MiB at 512 dims


def write(path, chunks, max_rows, progress=None):
    """Writes the float32 rows of `chunks` (arrays [n_i, D]) to `path` as a
    .npy file and returns how many rows it holds. At most `max_rows`
    (what the file is sized for); fewer when a producer drops rows, in
    which case the rows are copied once into a file of the exact size.
    Atomic: a reader sees the old file or the whole new one."""
    written = 0
    with io_utils.atomic_path(path) as tmp:
        rows = None
        for chunk in tqdm(
            chunks,
            desc=progress,
            unit="chunk",
            disable=True if progress is None else None,
        ):
            chunk = np.asarray(chunk, dtype=np.float32)
            if rows is None:
                rows = np.lib.format.open_memmap(
                    tmp,
                    mode="w+",
                    dtype=np.float32,
                    shape=(max_rows, chunk.shape[1]),
                )
            if written + len(chunk) > max_rows:
                raise ValueError(f"More than max_rows={max_rows} rows.")
            rows[written : written + len(chunk)] = chunk
            written += len(chunk)
        if rows is None:
            raise ValueError(f"No rows to write to {path!r}.")
        rows.flush()
        if written < max_rows:
            _shrink(tmp, rows, written)
        del rows  # unmapped before the rename
    return written


def _shrink(path, rows, count):
    """Replaces the file at `path` by its first `count` rows."""
    with io_utils.atomic_path(path) as tmp:
        exact = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(count, rows.shape[1])
        )
        for start in range(0, count, COPY_ROWS):
            stop = min(start + COPY_ROWS, count)
            exact[start:stop] = rows[start:stop]
        exact.flush()
        del exact


def open_rows(path):
    """The rows of a file `write` made, memory-mapped read-only."""
    return np.load(path, mmap_mode="r")
