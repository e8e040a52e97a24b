import os

import torch

from regene_search.data.cache import cached_tensors, default_cache_dir


def _cached(cache_dir, files, recipe="r"):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(6, dtype=torch.uint8).view(2, 3)}

    return cached_tensors(cache_dir, "t", files, recipe, build), len(calls)


def test_second_call_hits_the_cache(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    first, built = _cached(tmp_path / "cache", [src])
    second, built_again = _cached(tmp_path / "cache", [src])
    assert (built, built_again) == (1, 0)
    assert torch.equal(first["x"], second["x"])
    files = os.listdir(tmp_path / "cache" / "decoded")
    assert len(files) == 1 and files[0].startswith("t-") and files[0].endswith(".pt")  # no temp files left


def test_changed_files_or_recipe_rebuild(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    _cached(tmp_path / "cache", [src])
    assert _cached(tmp_path / "cache", [src], recipe="other")[1] == 1
    src.write_bytes(b"abcd")
    assert _cached(tmp_path / "cache", [src])[1] == 1
    os.utime(src, ns=(0, 0))
    assert _cached(tmp_path / "cache", [src])[1] == 1


def test_damaged_cache_file_is_rebuilt(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    _cached(tmp_path / "cache", [src])
    (entry,) = (tmp_path / "cache" / "decoded").iterdir()
    entry.write_bytes(b"garbage")
    result, built = _cached(tmp_path / "cache", [src])
    assert built == 1 and result["x"].shape == (2, 3)
    assert torch.load(entry, weights_only=True)["x"].shape == (2, 3)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REGENE_SEARCH_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("REGENE_SEARCH_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "regene-search")
