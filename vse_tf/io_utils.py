"""Files written so that a crash never leaves a half-written one behind.

Temporary names are created owner-only (0600 files, 0700 folders); what is
renamed into place gets the permissions of any file the user writes (0644
and 0755 under the usual umask), so a TensorBoard or TF Serving running as
another user can read a run.
"""

import contextlib
import json
import os
import shutil
import tempfile

from vse_tf import errors


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto it on success.

    The temporary name keeps the final suffix (Keras insists on
    `.weights.h5`), and the rename is atomic within one file system.
    """
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".tmp-{os.getpid()}-", suffix=name, dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def staging_dir(parent, name):
    """Yields a new hidden folder in `parent`; removed with what is left.

    Being on the same file system as its destination, what is built in it
    can be renamed into place atomically, a folder at a time.
    """
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
    os.chmod(path, DIR_MODE)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def replace_dir(source, target):
    """Renames the folder `source` onto `target`, moving an old one out.

    Two renames, as a folder cannot be renamed onto a full one: if the
    second fails, the old folder is put back before the error propagates;
    if that fails too, it is kept where it was moved, and the error says
    where. The old folder is removed only once the new one is in place.
    """
    old = tempfile.mkdtemp(prefix=".tmp-old-", dir=os.path.dirname(target))
    moved = os.path.join(old, "dir")
    if os.path.exists(target):
        os.rename(target, moved)
    try:
        os.rename(source, target)
    except BaseException as error:
        if os.path.exists(moved):
            try:
                os.rename(moved, target)
            except OSError:
                error.add_note(f"The previous {target} is kept at {moved}.")
                raise error from None
        os.rmdir(old)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, value):
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ensure_writable_dir(path, what="model dir"):
    """Creates `path` if need be; a UserError if it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as error:
        raise errors.UserError(
            f"Cannot write to the {what} {path!r} ({error.strerror}). Pass a "
            "folder you can write to."
        ) from error


@contextlib.contextmanager
def removed_on_user_error(path):
    """Removes the folder `path` if this block created it and ends with a
    user error: a run refused before it trained leaves nothing behind."""
    existed = os.path.exists(path)
    try:
        yield
    except errors.UserError:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise
