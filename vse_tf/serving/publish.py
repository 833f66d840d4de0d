"""Both towers' version N published together, by one atomic rename.

TF Serving watches one base path per model and loads each numbered folder
that appears in it. Two folders renamed into two base paths one after the
other leave a moment, and after a crash a lasting state, where
`image_tower/N` is there without `text_tower/N`: a server following the
latest version would pair a new image tower with an old text tower. So the
base paths are symbolic links into one release, and a release is swapped
in whole:

  EXPORT/image_tower -> .published/image_tower     (links made once)
  EXPORT/text_tower  -> .published/text_tower
  EXPORT/.published  -> .releases/R                (swapped by rename(2))
  EXPORT/.releases/R/<tower>/<N> -> ../../../.versions/N/<tower>
  EXPORT/.versions/N/<tower>/      the SavedModels, written once, never
                                   changed

Publishing version N moves both staged SavedModels under `.versions/N/`
(no server looks there), writes a new release listing every published
version of both towers, and renames a link to it onto `.published`. Any
path lookup sees the old release or the new one, never a mix, so version N
of one tower is visible exactly when version N of the other is. A crash
before the rename leaves the old release published and unreferenced
folders that the next publish removes; after it, the new release.

Releases are a few links each; one replaced over a minute ago is deleted
(`_remove_old_releases` says why it waits).

What a reader may still see: TF Serving polls its two base paths
independently (every `--file_system_poll_wait_seconds`), so for up to one
poll it may serve version N of one tower and N-1 of the other. Clients that
must never mix send the version with each request (both towers keep the
previous version loaded with `latest { num_versions: 2 }`; see
docs/serving.md); `vse_tf.load`, search and the search page read the
newest version that both towers have.

One writer at a time per export folder; POSIX file systems (links and
atomic renames).
"""

import os
import re
import shutil
import tempfile
import time

from vse_tf import io_utils

PUBLISHED = ".published"
# How long a replaced release is kept for readers still listing it.
RELEASE_GRACE_SECONDS = 60.0
RELEASES = ".releases"
VERSIONS = ".versions"


def numbered(folder):
    """The numbers that name subfolders of `folder`, ascending."""
    if not os.path.isdir(folder):
        return []
    return sorted(
        int(name) for name in os.listdir(folder) if re.fullmatch(r"\d+", name)
    )


def stored_versions(export_dir):
    """Every version written under `.versions`, published or not."""
    return numbered(os.path.join(export_dir, VERSIONS))


def publish(export_dir, staged, version, towers):
    """Publishes the staged SavedModel folders {tower: folder} as `version`
    of each of `towers`, all of them at once."""
    _adopt_plain_folders(export_dir, towers)
    listing = _published(export_dir, towers)
    _remove_unpublished(export_dir, listing)
    stored = os.path.join(export_dir, VERSIONS, str(version))
    os.makedirs(stored)
    for tower in towers:
        os.rename(staged[tower], os.path.join(stored, tower))
    _release(export_dir, {t: {*listing[t], version} for t in towers})
    _link_base_paths(export_dir, towers)


def _published(export_dir, towers):
    """{tower: the versions the current release lists}; before the first
    release, those stored (adopted from plain folders)."""
    if os.path.lexists(os.path.join(export_dir, PUBLISHED)):
        root = os.path.join(export_dir, PUBLISHED)
        return {t: set(numbered(os.path.join(root, t))) for t in towers}
    return {
        tower: {
            number
            for number in stored_versions(export_dir)
            if os.path.isdir(
                os.path.join(export_dir, VERSIONS, str(number), tower)
            )
        }
        for tower in towers
    }


def _remove_unpublished(export_dir, listing):
    """Removes what a publish that failed before its rename left."""
    listed = set().union(*listing.values())
    for number in stored_versions(export_dir):
        if number not in listed:
            shutil.rmtree(os.path.join(export_dir, VERSIONS, str(number)))


def _release(export_dir, listing):
    """Writes a release of {tower: versions} and publishes it whole."""
    releases = os.path.join(export_dir, RELEASES)
    os.makedirs(releases, exist_ok=True)
    release = tempfile.mkdtemp(prefix="r", dir=releases)
    for tower, numbers in listing.items():
        os.mkdir(os.path.join(release, tower))
        for number in sorted(numbers):
            os.symlink(
                os.path.join("..", "..", "..", VERSIONS, str(number), tower),
                os.path.join(release, tower, str(number)),
            )
    os.chmod(release, io_utils.DIR_MODE)
    published = os.path.join(export_dir, PUBLISHED)
    previous = (
        os.path.basename(os.readlink(published))
        if os.path.islink(published)
        else None
    )
    _swap_link(os.path.join(RELEASES, os.path.basename(release)), published)
    _remove_old_releases(releases, {os.path.basename(release), previous})


def _remove_old_releases(releases, kept):
    """Deletes the releases replaced over RELEASE_GRACE_SECONDS ago (a
    release is replaced when the next one is made), and what a deletion
    cut short left; the names in `kept` stay whatever their age.

    Renamed before it is deleted, a release is never reached half-deleted
    by a new lookup. But a reader that opened one of its folders just
    before still lists it while it empties (an open folder outlives its
    rename): seen as an empty tower under load. The grace outlasts any
    lookup and listing by far.
    """
    entries = [e for e in os.scandir(releases) if e.is_dir()]
    made = sorted(
        (e for e in entries if not e.name.startswith(".")),
        key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns,
    )
    deadline = time.time_ns() - int(RELEASE_GRACE_SECONDS * 1e9)
    doomed = [e.path for e in entries if e.name.startswith(".")]
    for release, successor in zip(made, made[1:]):
        replaced = successor.stat(follow_symlinks=False).st_mtime_ns
        if release.name not in kept and replaced < deadline:
            hidden = os.path.join(releases, f".{release.name}")
            os.rename(release.path, hidden)
            doomed.append(hidden)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)


def _swap_link(target, link):
    """Points `link` at `target` with one rename: never missing, never
    half-made."""
    temporary = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(temporary):
        os.remove(temporary)
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        os.remove(temporary)
        raise


def _link_base_paths(export_dir, towers):
    for tower in towers:
        link = os.path.join(export_dir, tower)
        if not os.path.lexists(link):
            os.symlink(os.path.join(PUBLISHED, tower), link)


def _adopt_plain_folders(export_dir, towers):
    """Moves the versions of an export folder written before releases
    (plain EXPORT/<tower>/<N> folders) under `.versions`, to be published
    with the new version; a server watching it sees them go and come
    back. Anything else in such a folder is kept beside it."""
    for tower in towers:
        folder = os.path.join(export_dir, tower)
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for number in numbered(folder):
            stored = os.path.join(export_dir, VERSIONS, str(number))
            os.makedirs(stored, exist_ok=True)
            os.rename(
                os.path.join(folder, str(number)), os.path.join(stored, tower)
            )
        if os.listdir(folder):
            os.rename(folder, os.path.join(export_dir, f".{tower}-unversioned"))
        else:
            os.rmdir(folder)
