"""The command line as a user meets it: help, datasets, and one clear line for every bad input."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from regene_search.cli import main

from regene_search.storage import Location

from .conftest import CLI, SHARED_DATA, needs_mnist


def cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "160"})


def test_help_answers():
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("run", "pareto", "show", "datasets"):
        assert command in proc.stdout
    run_help = cli("run", "--help")
    assert "--budget" in run_help.stdout and "--gpus-per-trial" in run_help.stdout


def test_datasets_lists_every_dataset():
    proc = cli("datasets")
    assert proc.returncode == 0, proc.stderr
    for name in ("mnist", "fashion-mnist", "cifar10", "celeba", "shapes", "imagefolder"):
        assert name in proc.stdout


def _write_idx_images(path: Path, count: int, *, magic: int = 2051, truncate: int = 0) -> None:
    body = bytes(count * 28 * 28)
    data = struct.pack(">IIII", magic, count, 28, 28) + body
    path.write_bytes(data[: len(data) - truncate])


def _write_idx_labels(path: Path, count: int) -> None:
    path.write_bytes(struct.pack(">II", 2049, count) + bytes(count))


def _mnist_dir(root: Path, *, magic: int = 2051, truncate: int = 0) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx_images(raw / "train-images-idx3-ubyte", 20, magic=magic, truncate=truncate)
    _write_idx_labels(raw / "train-labels-idx1-ubyte", 20)
    _write_idx_images(raw / "t10k-images-idx3-ubyte", 10)
    _write_idx_labels(raw / "t10k-labels-idx1-ubyte", 10)
    return root


def _space(tmp: Path, text: str) -> str:
    path = tmp / "space.toml"
    path.write_text(text)
    return str(path)


def _empty_classes(tmp: Path) -> str:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp / "folder" / split / cls).mkdir(parents=True)
    return f"imagefolder:{tmp / 'folder'}"


BAD_RUNS = {
    "unknown dataset": lambda t: (["run", "imagenet"], "unknown dataset"),
    "missing data dir": lambda t: (["run", "mnist", "--data-dir", str(t / "nope")], "mnist"),
    "truncated IDX": lambda t: (["run", "mnist", "--data-dir", str(_mnist_dir(t / "d", truncate=100))], "idx"),
    "wrong IDX magic": lambda t: (["run", "mnist", "--data-dir", str(_mnist_dir(t / "d", magic=1234))], "magic"),
    "empty class folders": lambda t: (["run", _empty_classes(t)], "folder"),
    "TOML syntax": lambda t: (["run", "shapes", "--space", _space(t, "[params\nlr = 1")], "space.toml"),
    "unknown space key": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlearning_rate = { choice = [1] }\n")], "learning_rate"),
    "bad domain": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlr = { loguniform = [-1, 1] }\n")], "lr"),
    "negative trials": lambda t: (["run", "shapes", "--trials", "-3"], "--trials"),
    "unknown stage": lambda t: (["run", "shapes", "--stages", "search,paint"], "paint"),
    "negative gpus": lambda t: (["run", "shapes", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    "name with separator": lambda t: (["run", "shapes", "--name", "a/b", "--results", str(t / "r")], "run name"),
    "name with dotdot": lambda t: (["run", "shapes", "--name", "..", "--results", str(t / "r")], "run name"),
    "pareto on a non-run folder": lambda t: (["pareto", str(t)], "not a regene-search run"),
    "show on a non-run folder": lambda t: (["show", str(t)], "not a regene-search run"),
    "resume a non-run folder": lambda t: (["run", "--resume", str(t)], "not a regene-search run"),
}


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """`main` in-process (the console script's code path without a fresh interpreter per case)."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_input_gets_one_line_and_exit_code_2(case, tmp_path, capsys):
    args, expected = BAD_RUNS[case](tmp_path)
    results = tmp_path / "results-root"
    if args[0] == "run" and "--results" not in args:
        args = [*args, "--results", str(results)]
    code, stderr = run_main(args, capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert expected.lower() in lines[0].lower(), lines[0]
    assert not results.exists() or not any(results.rglob("*.json")), "a failed run must not leave files behind"


BAD_URIS = {
    "unknown URI scheme": lambda s3: (["run", "shapes", "--results", "nosuchfs://bucket/results"], "cannot open"),
    "URI without a bucket": lambda s3: (["run", "shapes", "--results", "s3://"], "no bucket"),
    "missing bucket": lambda s3: (["run", "shapes", "--results", "s3://no-such-bucket/results"], "not writable"),
    "name with dotdot on S3": lambda s3: (["run", "shapes", "--name", "..", "--results", s3], "run name"),
    "pareto on an S3 prefix that is not a run": lambda s3: (["pareto", f"{s3}/nothing-here"], "not a regene-search run"),
    "show on an S3 prefix that is not a run": lambda s3: (["show", f"{s3}/nothing-here"], "not a regene-search run"),
    "resume an S3 prefix that is not a run": lambda s3: (["run", "--resume", f"{s3}/nothing-here"], "not a regene-search run"),
}


@pytest.mark.parametrize("case", sorted(BAD_URIS))
def test_bad_results_uris_get_one_line_and_exit_code_2(case, s3_root, capsys):
    root = f"{s3_root}/bad-uri-cases"
    args, expected = BAD_URIS[case](root)
    code, stderr = run_main(args, capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert expected.lower() in lines[0].lower(), lines[0]
    assert Location.of(root).files() == [], "a failed run must not leave files behind"


def test_the_console_script_reports_bad_input_in_one_line():
    proc = cli("run", "imagenet")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "regene-search: error: " + proc.stderr.strip().split("error: ", 1)[1]
    assert "Traceback" not in proc.stderr and "unknown dataset" in proc.stderr


def test_unwritable_results_root(tmp_path, capsys):
    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("x")  # root ignores permissions, but not a file in the way
        root = target / "results"
    else:
        root = tmp_path / "ro"
        root.mkdir(mode=0o500)
    code, stderr = run_main(["run", "shapes", "--results", str(root)], capsys)
    assert code == 2
    assert "not writable" in stderr and len(stderr.strip().splitlines()) == 1


def test_truncated_parquet_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"spec": {"dataset": "mnist", "stages": ["search"]}}')
    (run_dir / "pareto.parquet").write_bytes(b"PAR1\x00\x01garbage")
    (run_dir / "hypervolume.parquet").write_bytes(b"")
    (run_dir / "trials.parquet").write_bytes(b"")
    code, stderr = run_main(["pareto", str(run_dir)], capsys)
    assert code == 2
    assert "pareto.parquet" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
@needs_mnist
def test_gpus_beyond_the_cluster_are_refused_before_anything_is_written(tmp_path):
    import tempfile

    from .raycleanup import stop_ray_processes

    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        proc = cli("run", "mnist", "--data-dir", str(SHARED_DATA), "--budget", "smoke", "--gpus-per-trial", "4",
                   "--results", str(tmp_path / "r"), "--ray-temp-dir", ray_tmp)
    finally:
        stop_ray_processes(ray_tmp)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--gpus-per-trial 4 exceeds" in proc.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("run.json"))
