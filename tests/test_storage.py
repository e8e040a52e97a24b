"""Location behaves the same on local disk and on a real S3 endpoint; remote paths never fall back to local disk."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from regene_search.errors import UserError
from regene_search.storage import Location


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    """An empty folder, on local disk or under the session's S3 root."""
    if request.param == "local":
        return Location.of(tmp_path / "root")
    s3_root = request.getfixturevalue("s3_root")
    return Location.of(f"{s3_root}/storage-{request.node.name.replace('[', '-').rstrip(']')}-{os.getpid()}")


def test_write_read_list_and_move_into_place(folder):
    target = folder / "a" / "b.bin"
    assert not target.exists()
    target.write_bytes(b"first")
    target.write_bytes(b"second")
    assert target.read_bytes() == b"second" and target.is_file() and (folder / "a").is_dir()
    (folder / "c.txt").write_bytes(b"c")
    assert [f.relative_to(folder) for f in folder.files()] == ["a/b.bin", "c.txt"], "no temp file may be left behind"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(folder):
    target = folder / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        target.write_bytes("not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [f.name for f in folder.files()] == ["t.bin"]


def test_missing_file_is_file_not_found_everywhere(folder):
    with pytest.raises(FileNotFoundError):
        (folder / "none").read_bytes()
    assert folder.files() == []


def test_joining_and_relative_paths(folder):
    child = folder / "x/y/../z.png"
    assert child.is_within(folder) and child.relative_to(folder) == "x/z.png"
    assert child.name == "z.png" and child.parent == folder / "x"
    assert not (folder / "../elsewhere").is_within(folder)
    with pytest.raises(ValueError):
        (folder / "..").relative_to(folder)
    assert folder.at((folder / "q").path) == folder / "q"


def test_local_locations_are_path_like_and_remote_ones_refuse(tmp_path, s3_root):
    local = Location.of(tmp_path / "f")
    local.write_bytes(b"x")
    assert Path(local).read_bytes() == b"x" and Location.of(str(tmp_path / "f")) == local
    remote = Location.of(s3_root)
    assert str(remote) == s3_root and not remote.is_local
    with pytest.raises(TypeError, match="not on local disk"):
        os.fspath(remote)
    assert remote.tune_storage() == ("regene-test/results", remote.fs) and local.tune_storage() == (str(tmp_path / "f"), None)


def test_file_uris_are_local_disk(tmp_path):
    assert Location.of(f"file://{tmp_path}") == Location.of(tmp_path)
    assert isinstance(Location.of(f"file://{tmp_path}").fs, pafs.LocalFileSystem)


@pytest.mark.parametrize("uri", ["nosuchfs://bucket/x", "s3://"])
def test_unknown_or_malformed_uris_are_user_errors(uri):
    with pytest.raises(UserError, match="cannot open"):
        Location.of(uri)


def test_writability_is_checked_without_leaving_anything(s3_root, tmp_path):
    root = Location.of(s3_root) / "writable-check"
    root.check_writable()
    assert root.files() == []
    with pytest.raises(UserError, match="not writable"):
        Location.of("s3://no-such-bucket/results").check_writable()
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")  # blocks even root, who ignores permission bits
    with pytest.raises(UserError, match="not writable"):
        Location.of(in_the_way / "results").check_writable()
