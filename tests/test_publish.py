"""Both towers' versions published as pairs: faults injected between every
step of a publish, and a reader looking while versions are published."""

import os
import shutil
import threading
import time

import pytest

from vse_tf.serving import publish

TOWERS = ("image_tower", "text_tower")
# Every file-system step publish takes.
STEPS = ("rename", "replace", "symlink", "mkdir", "makedirs", "rmdir")


def stage(export_dir, version):
    """Both towers' "SavedModels" of `version`, staged: folders whose one
    file says which tower and version they are."""
    staged = {}
    for tower in TOWERS:
        folder = os.path.join(export_dir, f".tmp-export-{version}", tower)
        os.makedirs(folder)
        with open(os.path.join(folder, "saved_model.pb"), "w") as f:
            f.write(f"{tower} {version}")
        staged[tower] = folder
    return staged


def visible(export_dir):
    """{tower: {version: what its folder holds}} through the base paths,
    as a server reads them."""
    found = {}
    for tower in TOWERS:
        base = os.path.join(export_dir, tower)
        found[tower] = {}
        for name in os.listdir(base) if os.path.isdir(base) else []:
            with open(os.path.join(base, name, "saved_model.pb")) as f:
                found[tower][int(name)] = f.read()
    return found


def assert_pairs(export_dir, versions):
    found = visible(export_dir)
    for tower in TOWERS:
        assert found[tower] == {v: f"{tower} {v}" for v in versions}


def publish_version(export_dir, version):
    staged = stage(export_dir, version)
    try:
        publish.publish(export_dir, staged, version, TOWERS)
    finally:
        shutil.rmtree(
            os.path.join(export_dir, f".tmp-export-{version}"),
            ignore_errors=True,
        )


class Fault(Exception):
    pass


def fail_at(monkeypatch, step_number):
    """Makes the `step_number`-th file-system step of publish raise."""
    steps = []
    for name in STEPS:
        real = getattr(os, name)

        def step(*args, real=real, **kwargs):
            steps.append(real)
            if len(steps) == step_number:
                raise Fault(f"killed at step {step_number}")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, step)
    return steps


def test_a_publish_killed_at_any_step_shows_whole_pairs(tmp_path, monkeypatch):
    export_dir = str(tmp_path / "export")
    publish_version(export_dir, 1)
    failures = 0
    for step_number in range(1, 100):
        with monkeypatch.context() as patch:
            fail_at(patch, step_number)
            try:
                publish_version(export_dir, 2)
            except Fault:
                failures += 1
            else:
                break
        # Killed: version 1 alone, or both towers' version 2 as well.
        found = visible(export_dir)
        assert 1 in found["image_tower"]
        assert set(found["image_tower"]) == set(found["text_tower"])
        assert_pairs(export_dir, sorted(found["image_tower"]))
        if 2 in found["image_tower"]:
            break
        shutil.rmtree(
            os.path.join(export_dir, ".tmp-export-2"), ignore_errors=True
        )
    assert failures >= 8  # every step up to the swap was tried
    # What a killed publish left is cleared by the next one.
    if 2 not in visible(export_dir)["image_tower"]:
        publish_version(export_dir, 2)
    monkeypatch.setattr(publish, "RELEASE_GRACE_SECONDS", 0)
    publish_version(export_dir, 3)
    assert_pairs(export_dir, [1, 2, 3])
    assert publish.stored_versions(export_dir) == [1, 2, 3]
    # The release and the one before it, for a server still reading it.
    assert len(os.listdir(os.path.join(export_dir, publish.RELEASES))) == 2


def test_a_reader_resolving_the_release_once_always_sees_pairs(tmp_path):
    export_dir = str(tmp_path / "export")
    publish_version(export_dir, 1)
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                release = os.path.realpath(
                    os.path.join(export_dir, publish.PUBLISHED)
                )
                seen.append(
                    tuple(
                        sorted(os.listdir(os.path.join(release, tower)))
                        for tower in TOWERS
                    )
                )
            except FileNotFoundError:
                pass  # an old release, removed while being read

    reader = threading.Thread(target=read)
    reader.start()
    for version in range(2, 30):
        publish_version(export_dir, version)
    stop.set()
    reader.join()
    assert len(seen) > 10
    assert all(image == text for image, text in seen)
    assert_pairs(export_dir, range(1, 30))
    # Every release replaced within the grace is still there.
    assert len(os.listdir(os.path.join(export_dir, publish.RELEASES))) == 29


def _release_of(export_dir):
    return os.path.realpath(os.path.join(export_dir, publish.PUBLISHED))


def test_a_reader_listing_a_replaced_release_lists_it_whole(tmp_path):
    # An open folder outlives a rename: a reader that opened a release's
    # tower just before it was replaced twice lists what is left of it.
    export_dir = str(tmp_path / "export")
    publish_version(export_dir, 1)
    publish_version(export_dir, 2)
    with os.scandir(os.path.join(_release_of(export_dir), "text_tower")) as it:
        publish_version(export_dir, 3)
        publish_version(export_dir, 4)
        assert sorted(entry.name for entry in it) == ["1", "2"]


def test_releases_replaced_past_the_grace_are_deleted(tmp_path):
    export_dir = str(tmp_path / "export")
    releases = os.path.join(export_dir, publish.RELEASES)
    for version in range(1, 5):
        publish_version(export_dir, version)
    assert len(os.listdir(releases)) == 4
    # Made an hour ago, in the order they were made; and what a deletion
    # cut short left.
    for age, name in enumerate(
        sorted(
            os.listdir(releases),
            key=lambda n: os.stat(os.path.join(releases, n)).st_mtime_ns,
        )
    ):
        past = time.time() - 3600 + age
        os.utime(os.path.join(releases, name), (past, past))
    os.makedirs(os.path.join(releases, ".rleftover", "image_tower"))
    current = os.path.basename(_release_of(export_dir))
    publish_version(export_dir, 5)
    kept = os.listdir(releases)
    assert len(kept) == 2 and current in kept
    assert os.path.basename(_release_of(export_dir)) in kept
    assert_pairs(export_dir, range(1, 6))


def test_an_export_folder_of_plain_version_folders_is_adopted(tmp_path):
    export_dir = str(tmp_path / "export")
    for tower in TOWERS:
        for version in (1, 2):
            folder = os.path.join(export_dir, tower, str(version))
            os.makedirs(folder)
            with open(os.path.join(folder, "saved_model.pb"), "w") as f:
                f.write(f"{tower} {version}")
    # A half pair from a crash of the two-rename export: kept as it was.
    os.makedirs(os.path.join(export_dir, "image_tower", "3"))
    with open(
        os.path.join(export_dir, "image_tower", "3", "saved_model.pb"), "w"
    ) as f:
        f.write("image_tower 3")
    publish_version(export_dir, 4)
    found = visible(export_dir)
    assert sorted(found["image_tower"]) == [1, 2, 3, 4]
    assert sorted(found["text_tower"]) == [1, 2, 4]
    assert found["image_tower"][3] == "image_tower 3"
    assert all(
        os.path.islink(os.path.join(export_dir, tower)) for tower in TOWERS
    )


@pytest.mark.parametrize("version", [1, 5])
def test_a_publish_lists_every_earlier_version(tmp_path, version):
    export_dir = str(tmp_path / "export")
    publish_version(export_dir, version)
    publish_version(export_dir, version + 1)
    assert_pairs(export_dir, [version, version + 1])
