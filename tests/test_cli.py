"""The command line as a user meets it: help, datasets, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from regene_search.cli import main

from regene_search.storage import Location

from .conftest import CLI, SHARED_DATA, needs_mnist
from .raycleanup import stop_ray_processes


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


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


def _space(tmp: Path, text: str) -> str:
    path = tmp / "space.toml"
    path.write_text(text)
    return str(path)


def _empty_classes(tmp: Path) -> str:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp / "folder" / split / cls).mkdir(parents=True)
    return f"imagefolder:{tmp / 'folder'}"


def _image_folder(tmp: Path, classes: tuple[str, ...], *, bomb: bool = False) -> str:
    """An ImageFolder tree of tiny PNGs; `bomb` adds a 1-bit PNG declaring 10000x10000 pixels
    (a few KB on disk) and a symlink loop beside it, which scanning must survive."""
    from PIL import Image

    root = tmp / "folder[/x]"
    for cls in classes:
        (root / cls).mkdir(parents=True)
        Image.new("L", (28, 28), 128).save(root / cls / "0.png")
    if bomb:
        Image.new("1", (10_000, 10_000)).save(root / classes[0] / "bomb.png")
        (root / classes[0] / "loop").symlink_to(root)
    return f"imagefolder:{root}"


def _run_folder(tmp: Path, *, run_json: str | None = None, stages_json: str | None = None) -> str:
    """A run folder with a hand-damaged run.json or stages.json (the rest as a real run writes it)."""
    from regene_search.config import RunSpec
    from regene_search.results import write_json

    folder = tmp / "damaged"
    folder.mkdir()
    spec = RunSpec(dataset="shapes", data_dir=None, budget="smoke", name="damaged", results_root=str(tmp), space_path="x.toml")
    write_json({"spec": spec.to_json()}, folder / "run.json")
    if run_json is not None:
        (folder / "run.json").write_text(run_json)
    if stages_json is not None:
        (folder / "stages.json").write_text(stages_json)
    return str(folder)


def _spec_json(tmp: Path, **changes) -> str:
    """run.json of a smoke run on shapes with `changes` to its spec."""
    from regene_search.config import RunSpec

    spec = RunSpec(dataset="shapes", data_dir=None, budget="smoke", name="damaged", results_root=str(tmp), space_path="x.toml").to_json()
    return json.dumps({"spec": {**spec, **changes}})


BAD_RUNS = {
    "unknown dataset": lambda t: (["run", "imagenet"], "unknown dataset"),
    "missing data dir": lambda t: (["run", "mnist", "--data-dir", str(t / "nope")], "mnist"),
    "truncated IDX": lambda t: (["run", "mnist", "--data-dir", str(_mnist_dir(t / "d", truncate=100))], "idx"),
    "wrong IDX magic": lambda t: (["run", "mnist", "--data-dir", str(_mnist_dir(t / "d", magic=1234))], "magic"),
    "empty class folders": lambda t: (["run", _empty_classes(t)], "folder"),
    "one class folder": lambda t: (["run", _image_folder(t, ("cat",))], "one class folder (cat); a classifier needs at least 2"),
    "decompression bomb beside a symlink loop": lambda t: (["run", _image_folder(t, ("a", "b"), bomb=True)], "bomb.png: 10000x10000 pixels is over the 89-megapixel limit"),
    "data dir is a file": lambda t: (["run", "mnist", "--data-dir", str(_file(_mnist_dir(t / "d") / "notes.txt"))], "is a file"),
    "TOML syntax": lambda t: (["run", "shapes", "--space", _space(t, "[params\nlr = 1")], "space.toml"),
    "unknown space key": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlearning_rate = { choice = [1] }\n")], "learning_rate"),
    "bad domain": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlr = { loguniform = [-1, 1] }\n")], "lr"),
    "latent no trial can hold": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlatent_dim = { choice = [256, 1000000000] }\n")], "latent_dim"),
    "more blocks than the image allows": lambda t: (["run", "shapes", "--space", _space(t, "[params]\nlr = { choice = [0.001] }\n[fixed]\nblocks = 6\n")], "blocks = 6 pools a 32px image below 1 px"),
    "negative trials": lambda t: (["run", "shapes", "--trials", "-3"], "--trials"),
    "front with weights": lambda t: (["run", "shapes", "--promote", "front", "--promote-weights", "1,1,1"], "--promote-weights does not apply"),
    "knee with weights": lambda t: (["run", "shapes", "--promote-weights", "1,1,1"], "--promote-weights applies to --promote weighted"),
    "front with top K": lambda t: (["run", "shapes", "--promote", "front", "--promote-top", "5"], "--promote-top does not apply"),
    "grace period with fifo": lambda t: (["run", "shapes", "--scheduler", "fifo", "--grace-period", "2"], "--grace-period applies to the ASHA schedulers"),
    "warm-up with the smoke budget's fifo": lambda t: (["run", "shapes", "--budget", "smoke", "--warmup-trials", "2"], "--warmup-trials applies to the ASHA schedulers"),
    "startup trials with the default budget's random sampler": lambda t: (["run", "shapes", "--startup-trials", "4"], "--startup-trials applies to --sampler tpe; random"),
    "reduction factor with fifo": lambda t: (["run", "shapes", "--scheduler", "fifo", "--reduction-factor", "3"], "--reduction-factor applies to the ASHA schedulers"),
    "reduction factor of 1": lambda t: (["run", "shapes", "--scheduler", "asha", "--reduction-factor", "1"], "--reduction-factor: must be a number > 1"),
    "grace period beyond the budget": lambda t: (["run", "shapes", "--budget", "smoke", "--scheduler", "asha", "--grace-period", "3"], "beyond the smoke budget's 2 epochs"),
    "startup trials with random": lambda t: (["run", "shapes", "--sampler", "random", "--startup-trials", "4"], "--startup-trials applies to --sampler tpe"),
    "unknown promotion": lambda t: (["run", "shapes", "--promote", "best"], "--promote"),
    "unknown stage": lambda t: (["run", "shapes", "--stages", "search,paint"], "paint"),
    "unknown generator": lambda t: (["run", "shapes", "--generators", "convex,diffusion"], "unknown generator 'diffusion'; choose from convex,gaussian,lsdm,lr-livae"),
    "no generator": lambda t: (["run", "shapes", "--generators", ","], "no generator given"),
    "negative gpus": lambda t: (["run", "shapes", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    "no cpus per trial": lambda t: (["run", "shapes", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    "negative seed": lambda t: (["run", "shapes", "--seed", "-1"], "--seed"),
    "no labelled images": lambda t: (["run", "shapes", "--labelled-fraction", "0"], "--labelled-fraction: must be a number in (0, 1], got 0"),
    "labelled fraction above 1": lambda t: (["run", "shapes", "--labelled-fraction", "1.5"], "--labelled-fraction: must be a number in (0, 1], got 1.5"),
    "labelled fraction not a number": lambda t: (["run", "shapes", "--labelled-fraction", "abc"], "--labelled-fraction: must be a number in (0, 1], got abc"),
    "run.json with a labelled fraction of 0": lambda t: (["run", "--resume", _run_folder(t, run_json=_spec_json(t, labelled_fraction=0))], "labelled fraction must be in (0, 1], got 0"),
    "run.json is not JSON": lambda t: (["run", "--resume", _run_folder(t, run_json="{not json")], "run.json is unreadable"),
    "run.json without a spec": lambda t: (["run", "--resume", _run_folder(t, run_json="[1, 2]")], "not a regene-search run record"),
    "run.json with a bad spec": lambda t: (["run", "--resume", _run_folder(t, run_json='{"spec": {"dataset": "mnist"}}')], "no usable run spec"),
    "stages.json malformed": lambda t: (["run", "--resume", _run_folder(t, stages_json='{"search": 3}')], "stages.json is malformed"),
    "show with run.json malformed": lambda t: (["show", _run_folder(t, run_json='"x"')], "not a regene-search run record"),
    "show with stages.json malformed": lambda t: (["show", _run_folder(t, stages_json="[]")], "stages.json is malformed"),
    "name with separator": lambda t: (["run", "shapes", "--name", "a/b", "--results", str(t / "r")], "run name"),
    "name with dotdot": lambda t: (["run", "shapes", "--name", "..", "--results", str(t / "r")], "run name"),
    "pareto on a non-run folder": lambda t: (["pareto", str(t)], "not a regene-search run"),
    "show on a non-run folder": lambda t: (["show", str(t)], "not a regene-search run"),
    "resume a non-run folder": lambda t: (["run", "--resume", str(t)], "not a regene-search run"),
    "MLflow URI of no known store": lambda t: (["run", "shapes", "--mlflow", "nosuch://store"], "--mlflow nosuch://store: "),
    "MLflow plain-folder store (refused by MLflow 3)": lambda t: (["run", "shapes", "--mlflow", f"file://{t}/mlruns"], "sqlite:///"),
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


@pytest.mark.parametrize("command", [["run", "shapes", "--results"], ["run", "--resume"], ["show"], ["pareto"]])
def test_credentials_in_a_uri_are_refused_without_being_echoed(command, capsys):
    code, stderr = run_main([*command, "s3://AKIAKEY:TOPSECRET@regene-test/x"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "s3://***@regene-test/x: credentials do not go in a results URI" in stderr
    assert "TOPSECRET" not in stderr and "AKIAKEY" not in stderr


def test_an_address_with_no_cluster_gets_one_line_and_exit_2(tmp_path):
    proc = cli("run", "shapes", "--stages", "search", "--address", "127.0.0.1:9", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "regene-search: error: no Ray cluster answers at 127.0.0.1:9 (Connection refused); start one with `ray start --head` or check --address"
    ]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))


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


@pytest.mark.parametrize(
    ("flags", "promote", "top"),
    [([], "knee", 1), (["--promote", "front"], "front", 1), (["--promote-top", "3"], "knee", 3), (["--promote", "weighted", "--promote-weights", "1,2,0"], "weighted", 1)],
)
def test_promotion_flags_reach_the_run_spec(flags, promote, top, tmp_path):
    from regene_search.cli import _spec_from_args, build_parser

    spec = _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path), *flags]))
    assert (spec.promote, spec.promote_top) == (promote, top)


def test_search_knobs_reach_the_run_spec_the_sampler_and_run_json(tmp_path):
    from regene_search.cli import _spec_from_args, build_parser
    from regene_search.config import RunSpec
    from regene_search.search.tuner import make_sampler

    args = ["run", "shapes", "--results", str(tmp_path), "--scheduler", "pareto-asha", "--grace-period", "2", "--reduction-factor", "3", "--startup-trials", "5",
            "--sampler", "tpe", "--warmup-trials", "0"]
    spec = _spec_from_args(build_parser().parse_args(args))
    assert (spec.grace_period, spec.reduction_factor, spec.startup_trials, spec.warmup_trials) == (2, 3.0, 5, 0)
    assert RunSpec.from_json(spec.to_json()) == spec
    assert make_sampler("tpe", seed=0, trials=40, startup_trials=spec.startup_trials)._n_startup_trials == 5
    assert make_sampler("tpe", seed=0, trials=40)._n_startup_trials == 10
    default = _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path)]))  # the default budget's winner
    assert (default.sampler, default.scheduler, default.grace_period, default.reduction_factor, default.warmup_trials) == ("random", "asha", 2, 10.0, 2)
    assert default.resolved_trials == 70  # the 24 trials' 192 trial-epochs, spent on trials that mostly stop at epoch 2
    smoke = _spec_from_args(build_parser().parse_args(["run", "shapes", "--budget", "smoke", "--results", str(tmp_path)]))
    assert (smoke.sampler, smoke.scheduler, smoke.grace_period, smoke.reduction_factor, smoke.warmup_trials, smoke.resolved_trials) == ("tpe", "fifo", 1, 2.0, 0, 4)


def test_image_floor_is_the_budgets_unless_given_and_zero_turns_it_off(tmp_path):
    from regene_search.cli import _spec_from_args, build_parser
    from regene_search.config import RunSpec

    def floor(*flags: str) -> float | None:
        spec = _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path), *flags]))
        assert RunSpec.from_json(spec.to_json()) == spec
        return spec.min_image_confidence

    assert floor("--budget", "cpu-hour") == 0.7  # its CPU-trained classifier's per-class means are low
    assert floor("--budget", "cpu-hour", "--min-image-confidence", "0") is None  # the paper's filter
    assert floor("--budget", "cpu-hour", "--min-image-confidence", "0.5") == 0.5
    assert floor("--budget", "smoke") is None and floor() is None and floor("--budget", "paper") is None
    assert floor("--budget", "smoke", "--min-image-confidence", "0.6") == 0.6


def test_generators_reach_the_run_spec_and_run_json_and_resume_keeps_the_runs_own(tmp_path, capsys):
    from regene_search.cli import _spec_from_args, build_parser
    from regene_search.config import GENERATORS, RunSpec

    spec = _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path), "--generators", "lsdm, convex,lsdm"]))
    assert spec.generators == ("lsdm", "convex") and RunSpec.from_json(spec.to_json()) == spec
    assert _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path)])).generators == GENERATORS == ("convex", "gaussian", "lsdm", "lr-livae")
    old = {k: v for k, v in spec.to_json().items() if k != "generators"}
    assert RunSpec.from_json(old).generators == ("convex",)  # a run recorded before the strategies
    # The filter's image step: reconstructions by default; a run recorded before the choice kept the paper's rule.
    assert spec.image_threshold == "reconstructions"
    paper = _spec_from_args(build_parser().parse_args(["run", "shapes", "--results", str(tmp_path), "--image-threshold", "holdout"]))
    assert paper.image_threshold == "holdout" and RunSpec.from_json(paper.to_json()) == paper
    assert RunSpec.from_json({k: v for k, v in spec.to_json().items() if k != "image_threshold"}).image_threshold == "holdout"
    done = {s: {"status": "done", "started": 0.0, "seconds": 1.0, "summary": {}} for s in ("search", "decoder", "generate", "evaluate")}
    folder = _run_folder(tmp_path, stages_json=json.dumps(done))
    assert main(["run", "--resume", folder, "--generators", "gaussian", "--stages", "search"]) == 0
    assert "ignored: --generators" in capsys.readouterr().out


@needs_mnist
def test_the_labelled_fraction_reaches_the_run_spec_run_json_and_the_runs_data(tmp_path):
    from regene_search.cli import _spec_from_args, build_parser
    from regene_search.config import RunSpec
    from regene_search.pipeline import load_run_data

    args = ["run", "mnist", "--data-dir", str(SHARED_DATA), "--budget", "smoke", "--results", str(tmp_path), "--labelled-fraction", "0.1"]
    spec = _spec_from_args(build_parser().parse_args(args))
    assert spec.labelled_fraction == 0.1 and spec.to_json()["labelled_fraction"] == 0.1
    assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    old = {k: v for k, v in spec.to_json().items() if k != "labelled_fraction"}
    assert RunSpec.from_json(old).labelled_fraction == 1.0  # a run recorded before semi-supervised runs had every label
    data = load_run_data(spec)
    assert (len(data.train_x), len(data.unlabelled_x), len(data.val_x)) == (500, 4500, 1000)  # the smoke subset, then 10 % labelled
    full = load_run_data(RunSpec.from_json(old))
    assert len(full.train_x) == 5000 and not len(full.unlabelled_x)
    assert sorted(map(bytes, data.all_train_x.flatten(1).numpy())) == sorted(map(bytes, full.train_x.flatten(1).numpy()))


def test_resume_keeps_the_runs_labelled_fraction_and_show_prints_it(tmp_path, capsys):
    from regene_search.results import read_json, write_json

    from .run_folders import make_run

    done = {s: {"status": "done", "started": 0.0, "seconds": 1.0, "summary": {}} for s in ("search", "decoder", "generate", "evaluate")}
    folder = _run_folder(tmp_path, run_json=_spec_json(tmp_path, labelled_fraction=0.1), stages_json=json.dumps(done))
    assert main(["run", "--resume", folder, "--labelled-fraction", "0.5", "--stages", "search"]) == 0
    assert "ignored: --labelled-fraction" in capsys.readouterr().out
    assert json.loads(Path(folder, "run.json").read_text())["spec"]["labelled_fraction"] == 0.1

    paths = make_run(tmp_path)
    assert main(["show", str(paths.dir)]) == 0
    assert "labels on" not in capsys.readouterr().out  # every label: nothing to say
    record = read_json(paths.run_json)
    write_json({**record, "spec": {**record["spec"], "labelled_fraction": 0.1}}, paths.run_json)
    assert main(["show", str(paths.dir)]) == 0
    assert "semi-supervised: labels on 10% of the train split" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert main(["show", "--json", str(paths.dir)]) == 0
    assert json.loads(capsys.readouterr().out)["labelled_fraction"] == 0.1


def test_resume_names_the_flags_it_ignores(tmp_path, capsys):
    done = {s: {"status": "done", "started": 0.0, "seconds": 1.0, "summary": {}} for s in ("search", "decoder", "generate", "evaluate")}
    folder = _run_folder(tmp_path, stages_json=json.dumps(done))
    code = main(["run", "--resume", folder, "--budget", "paper", "--trials", "4", "--seed", "4", "--stages", "search"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ignored: --budget, --seed" in out  # --trials 4 is the smoke run's own number: honoured
    assert "stage search: already done, skipped" in out
    assert main(["run", "--resume", folder, "--stages", "search"]) == 0
    assert "ignored" not in capsys.readouterr().out


def test_resume_refuses_a_changed_number_of_trials_in_one_line(tmp_path, capsys):
    folder = _run_folder(tmp_path)
    code, stderr = run_main(["run", "--resume", folder, "--trials", "9"], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "--trials 9: the run in " in stderr and "was started with 4 trials" in stderr and "start a new run" in stderr


def test_version_and_defaults_in_help():
    assert cli("--version").stdout.strip().startswith("regene-search 0.")
    run_help = " ".join(cli("run", "--help").stdout.split())
    for shown in ("(default: 1.0)", "(default: 0.0)", "(default by budget: smoke tpe, cpu-hour tpe, default random, paper random)",
                  "(default by budget: smoke fifo, cpu-hour fifo, default asha, paper asha)", "(default: 2)", "(default: knee)", "(default: 0)"):
        assert shown in run_help, shown
    assert "(default: None)" not in run_help and "(default: False)" not in run_help


def test_a_figure_suffix_other_than_png_svg_pdf_is_refused_before_reading_the_run(tmp_path, capsys):
    code, stderr = run_main(["pareto", str(tmp_path / "no-such-run"), "--plot", str(tmp_path / "front.gif")], capsys)
    assert code == 2 and stderr.count("\n") == 1 and "front.gif: a figure is written as .png, .svg, .pdf" in stderr
    assert not (tmp_path / "front.gif").exists()


def test_a_second_run_on_a_folder_in_use_gets_one_line_and_exit_2(tmp_path):
    """The first run is alive (here: a process holding the folder's lock); nothing of it is touched."""
    folder = Path(_run_folder(tmp_path))
    holder = subprocess.Popen(["sleep", "120"])
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    try:
        (folder / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": 0}))
        proc = cli("run", "--resume", str(folder), "--stages", "search", "--ray-temp-dir", ray_tmp)
    finally:
        holder.kill()
        stop_ray_processes(ray_tmp)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and f"is in use by PID {holder.pid}" in lines[0], proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "run.json"]
