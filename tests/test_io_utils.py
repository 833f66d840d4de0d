"""io_utils: files and folders that are whole or absent, with faults
injected between their steps."""

import os

import pytest

from vse_tf import io_utils


def _folder(path, text):
    os.makedirs(path)
    with open(os.path.join(path, "file.txt"), "w") as f:
        f.write(text)


def _read(path):
    with open(os.path.join(path, "file.txt")) as f:
        return f.read()


def test_replace_dir_puts_the_new_folder_in_place_of_the_old(tmp_path):
    target = str(tmp_path / "projector")
    _folder(target, "old")
    with io_utils.staging_dir(str(tmp_path), "new") as staging:
        _folder(os.path.join(staging, "built"), "new")
        io_utils.replace_dir(os.path.join(staging, "built"), target)
    assert _read(target) == "new"
    assert os.listdir(tmp_path) == ["projector"]  # nothing staged is left


def _renames_failing(monkeypatch, fails):
    """os.rename raising "disk gone" where fails(its call number) is true;
    the list of its destinations."""
    renames = []
    rename = os.rename

    def faulty(source, destination):
        renames.append(destination)
        if fails(len(renames)):
            raise OSError("disk gone")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", faulty)
    return renames


def test_a_failed_replace_keeps_the_old_folder(tmp_path, monkeypatch):
    target = str(tmp_path / "projector")
    _folder(target, "old")
    # The second rename (the new folder into place) fails.
    renames = _renames_failing(monkeypatch, lambda call: call == 2)
    with io_utils.staging_dir(str(tmp_path), "new") as staging:
        _folder(os.path.join(staging, "built"), "new")
        with pytest.raises(OSError, match="disk gone"):
            io_utils.replace_dir(os.path.join(staging, "built"), target)
    assert len(renames) == 3  # old out, new in (failed), old back
    assert _read(target) == "old"
    assert os.listdir(tmp_path) == ["projector"]


def test_when_putting_the_old_folder_back_fails_too_it_is_kept(
    tmp_path, monkeypatch
):
    target = str(tmp_path / "projector")
    _folder(target, "old")
    # Only the first rename (the old folder out) works.
    _renames_failing(monkeypatch, lambda call: call > 1)
    with io_utils.staging_dir(str(tmp_path), "new") as staging:
        _folder(os.path.join(staging, "built"), "new")
        with pytest.raises(OSError, match="disk gone") as raised:
            io_utils.replace_dir(os.path.join(staging, "built"), target)
    kept = raised.value.__notes__[0].split(" is kept at ")[1].rstrip(".")
    assert _read(kept) == "old"
    assert not os.path.exists(target)


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "metrics.json")
    io_utils.write_json_atomic(path, {"rsum": 1.0})
    with pytest.raises(RuntimeError):
        with io_utils.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert io_utils.read_json(path) == {"rsum": 1.0}
    assert os.listdir(tmp_path) == ["metrics.json"]
