"""Record full learning curves of ReGene trials into Parquet tables, for replaying searches.

Each configuration is drawn from the dataset's packaged search space
(`search_spaces/<dataset>.toml`) by a seeded sampler and trained by the project's
own trial code (`regene_search.trial.run_trial`) for the SAME number of epochs (`--epochs`,
default 12), overriding the space's `epochs`. The warm-up + cosine LR schedule therefore spans
those epochs, as in LCBench-style tables: a curve cut at epoch k is what a scheduler sees at
epoch k of a 12-epoch trial, not a finished k-epoch trial.

    # MNIST first (fast), then CIFAR-10; one torch thread, lowest priority, in the background
    # (its own process group, so `kill -- -$(cat benchmarks/data/record.pid)` stops both). setsid
    # also gives it its own scheduler autogroup, and nice only ranks processes inside one: without
    # the autogroup's own nice 19 the recorder takes a full share of the cores from everything else.
    OMP_NUM_THREADS=1 nohup setsid nice -n 19 bash -c 'echo $$ > benchmarks/data/record.pid; echo 19 > /proc/$$/autogroup;
        .venv/bin/python benchmarks/record_curves.py --dataset mnist &&
        .venv/bin/python benchmarks/record_curves.py --dataset cifar10' > benchmarks/data/record.log 2>&1 &
    # a tiny check
    .venv/bin/python benchmarks/record_curves.py --dataset cifar10 --configs 2 --epochs 2 --out /tmp/t_curves.parquet

Two cores: run two recorders with `--shard 0/2` and `--shard 1/2` (each takes the configurations
whose id modulo 2 is its number; they merge into the same files under a lock):

    for k in 0 1; do OMP_NUM_THREADS=1 nohup setsid nice -n 19 bash -c "echo \\$\\$ > benchmarks/data/record$k.pid; echo 19 > /proc/\\$\\$/autogroup;
        exec .venv/bin/python benchmarks/record_curves.py --dataset cifar10 --shard $k/2" >> benchmarks/data/record$k.log 2>&1 & done
    # pause both (e.g. while CI runs), then resume:
    for k in 0 1; do kill -STOP -- -$(cat benchmarks/data/record$k.pid); done
    for k in 0 1; do kill -CONT -- -$(cat benchmarks/data/record$k.pid); done

Resume: run the same command again. Configurations already in the table are skipped (their
recorded hyperparameters are checked against the regenerated list, which the seed fixes, and the
data/probe/epoch settings must match); a configuration interrupted mid-way is redone from
scratch. `--configs N` with a larger N extends a table: config i depends only on (seed, i).

Outputs (each rewritten atomically, temp file + rename, after every finished configuration;
the curves file first, so a crash between the two renames only causes a redo):

`benchmarks/data/<dataset>_curves.parquet`, one row per (configuration, epoch):
  config_id            index in the seeded list (0..N-1)
  param_<name>         every TrialConfig field the space sets (searched and fixed) + param_epochs
  epoch                1..epochs
  accuracy             top-1 accuracy on the whole validation subset            (higher better)
  decoder_mae          MAE of the fixed probe decoder on the probe's val images (lower better)
  latent_sparsity      fraction of exactly-zero latent activations              (lower better)
  joint_score          ScoreWeights() combination of the three                  (higher better)
  train_loss           mean training loss of the epoch
  train_seconds, probe_seconds   wall seconds of this epoch's training / scoring
  seconds              wall seconds since the trial started (cumulative)
  cpu_seconds          CPU seconds of this process for this epoch (train + probe); steadier than
                       the wall times when the shared cores are busy
  status               final status of the configuration: done | diverged
  dataset, train_images, val_images, probe_train_images, probe_val_images, probe_steps,
  seed (data subset, sampler and trial seed), hflip, torch_threads, git_commit (HEAD at start)

`benchmarks/data/<dataset>_configs.parquet`, one row per finished configuration:
  config_id, param_<name>, status (done | diverged), reason (TrialDiverged's message or null),
  epochs_done, seconds, the same setting columns. A configuration that diverged in epoch 1 has
  no curve rows, only this row.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load  # noqa: E402

from regene_search.config import BUDGETS, ProbeConfig, TrialConfig  # noqa: E402
from regene_search.search.space import SPACES_DIR, load_space  # noqa: E402
from regene_search.trial import TrialDiverged, TrialSetup, run_trial  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
# Sizes from measured seconds per epoch (1 thread, smoke probe): CIFAR-10 at 2,000/1,000 images
# takes ~7-75 s per epoch depending on the config (median ~19 s), ~9 CPU-hours for 96 x 12;
# MNIST at 4,000/1,000 takes ~4-25 s per epoch, ~1.5 CPU-hours for 40 x 12.
DEFAULTS = {
    "cifar10": {"configs": 96, "train": 2000, "val": 1000, "hflip": True},
    "mnist": {"configs": 40, "train": 4000, "val": 1000, "hflip": False},
}
SMOKE_PROBE = BUDGETS["smoke"].probe  # 1,024 / 256 images, 60 steps
METRICS = ("epoch", "accuracy", "decoder_mae", "latent_sparsity", "joint_score", "train_loss", "train_seconds", "probe_seconds", "seconds")


def draw_configs(space, n: int, seed: int, epochs: int) -> list[dict[str, Any]]:
    """Config i draws from its own generator seeded by (seed, i): a longer list keeps the prefix."""
    configs = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        values = {name: domain.sample(rng) for name, domain in space.params.items() if name != "epochs"}
        configs.append(values | dict(space.fixed) | {"epochs": epochs})
    return configs


def same_params(row: dict[str, Any], config: dict[str, Any]) -> bool:
    for name, value in config.items():
        got = row.get(f"param_{name}")
        if isinstance(value, float) and not isinstance(got, bool) and isinstance(got, int | float):
            if not math.isclose(got, value, rel_tol=1e-12):
                return False
        elif got != value:
            return False
    return True


def read_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.exists() else []


def write_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path):
    """Serialise read-merge-write of the tables between sharded recorders."""
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def append_finished(out: Path, status_path: Path, curves: list[dict[str, Any]], status: dict[str, Any]) -> None:
    """Add one finished configuration to both tables as they are on disk now (another shard may have written)."""
    with locked(out):
        done = {row["config_id"] for row in read_rows(status_path)}
        old_curves = [row for row in read_rows(out) if row["config_id"] in done and row["config_id"] != status["config_id"]]
        old_status = [row for row in read_rows(status_path) if row["config_id"] != status["config_id"]]
        write_atomic(out, sorted(old_curves + curves, key=lambda r: (r["config_id"], r["epoch"])))
        write_atomic(status_path, sorted(old_status + [status], key=lambda r: r["config_id"]))


def shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(k), int(n)


def git_commit() -> str | None:
    """HEAD of the project when this process started (trial code may change between sessions)."""
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    return run.stdout.strip() or None


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DEFAULTS), default="cifar10")
    parser.add_argument("--configs", "--limit", type=int, help="configurations in the table (default: 96 cifar10, 40 mnist)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every configuration (default 12)")
    parser.add_argument("--train", type=int, help="training images (default 2000 cifar10, 4000 mnist)")
    parser.add_argument("--val", type=int, help="validation images (default 1000)")
    parser.add_argument("--probe-train", type=int, default=SMOKE_PROBE.train_images)
    parser.add_argument("--probe-val", type=int, default=SMOKE_PROBE.val_images)
    parser.add_argument("--probe-steps", type=int, default=SMOKE_PROBE.steps)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; also set OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0, help="sampler, data subset and trial seed (default 0)")
    parser.add_argument("--shard", type=shard, default=(0, 1), metavar="K/N", help="record only config ids with id %% N == K (default 0/1)")
    parser.add_argument("--out", type=Path, help="curves file (default benchmarks/data/<dataset>_curves.parquet)")
    args = parser.parse_args(argv)
    preset = DEFAULTS[args.dataset]
    n_configs, n_train, n_val = args.configs or preset["configs"], args.train or preset["train"], args.val or preset["val"]
    out = args.out or DATA / f"{args.dataset}_curves.parquet"
    status_path = out.with_name(f"{out.stem.removesuffix('_curves')}_configs.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    space = load_space(SPACES_DIR / f"{args.dataset}.toml")
    configs = draw_configs(space, n_configs, args.seed, args.epochs)
    probe = ProbeConfig(train_images=args.probe_train, val_images=args.probe_val, steps=args.probe_steps)
    setup = TrialSetup(probe=probe, seed=args.seed, hflip=preset["hflip"])
    settings = {"dataset": args.dataset, "train_images": n_train, "val_images": n_val, "probe_train_images": probe.train_images,
                "probe_val_images": probe.val_images, "probe_steps": probe.steps, "seed": args.seed, "hflip": setup.hflip}

    # Resume: keep finished configurations whose settings and hyperparameters match this run.
    finished = read_rows(status_path)
    for row in finished:
        for key, value in settings.items():
            if row[key] != value:
                sys.exit(f"{status_path}: recorded with {key}={row[key]!r}, this run has {value!r}; use the same options or another --out")
        i = row["config_id"]
        if i < len(configs) and not same_params(row, configs[i]):
            sys.exit(f"{status_path}: config {i} differs from the one seed {args.seed} draws now (other --epochs, or the space file changed?); use another --out")
    done_ids = {row["config_id"] for row in finished}
    shard_k, shard_n = args.shard
    todo = [i for i in range(n_configs) if i not in done_ids and i % shard_n == shard_k]
    print(f"[{args.dataset}] {n_configs} configs x {args.epochs} epochs, train {n_train} / val {n_val}, probe "
          f"{probe.train_images}/{probe.val_images}x{probe.steps} steps, seed {args.seed}, {torch.get_num_threads()} thread(s); "
          f"{len(done_ids)} already recorded in {out}, {len(todo)} to do", flush=True)
    if not todo:
        return

    data = load(args.dataset, train=n_train, val=n_val, seed=args.seed)
    extra = settings | {"torch_threads": torch.get_num_threads(), "git_commit": git_commit()}
    session_start, spent = time.perf_counter(), []
    for k, i in enumerate(todo, start=1):
        config = configs[i]
        params = {f"param_{name}": value for name, value in config.items()}
        history: list[dict[str, Any]] = []
        cpu_mark = [time.process_time()]

        def on_epoch(metrics: dict[str, Any], _checkpoint) -> None:
            cpu_seconds, cpu_mark[0] = time.process_time() - cpu_mark[0], time.process_time()
            history.append({name: metrics[name] for name in METRICS} | {"cpu_seconds": cpu_seconds})
            print(f"    epoch {metrics['epoch']:>2}/{args.epochs}  acc {metrics['accuracy']:.3f}  mae {metrics['decoder_mae']:.4f}  "
                  f"sparsity {metrics['latent_sparsity']:.3f}  train {metrics['train_seconds']:.1f}s  probe {metrics['probe_seconds']:.1f}s",
                  flush=True)

        shown = " ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in config.items() if name != "epochs")
        print(f"[{args.dataset}] config {k}/{len(todo)} (id {i}): {shown}", flush=True)
        start = time.perf_counter()
        status, reason = "done", None
        try:
            run_trial(data, TrialConfig.from_dict(config), setup, on_epoch=on_epoch)
        except TrialDiverged as exc:
            status, reason = "diverged", str(exc)
        seconds = time.perf_counter() - start
        append_finished(out, status_path, [{"config_id": i, **params, **h, "status": status, **extra} for h in history],
                        {"config_id": i, **params, "status": status, "reason": reason, "epochs_done": len(history), "seconds": seconds, **extra})

        spent.append(seconds)
        eta = (len(todo) - k) * sum(spent) / len(spent)
        print(f"[{args.dataset}] config {k}/{len(todo)} (id {i}) {status}{': ' + reason if reason else ''} in {seconds:.1f}s | "
              f"elapsed {hms(time.perf_counter() - session_start)}, ETA {hms(eta)}", flush=True)


if __name__ == "__main__":
    main()
