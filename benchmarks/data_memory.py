"""How many copies of the dataset does a node hold when N trial workers use it? Prints a table, writes JSON.

For each dataset and each way of shipping it through Ray's object store, a real in-process Ray
(own temp dir, stopped after) with 8 worker processes (Ray actors, as Tune's trial actors: each
has imported torch and the package, then `ray.get`s the dataset's reference the way
`tune.with_parameters` hands it to a trainable, rebuilds the `ImageData` and reads every byte of
it, as an epoch does):

* `torch`: the `ImageData` of uint8 torch tensors itself (the search's path before issue 17);
* `numpy`: `data/shared.py:to_arrays` in the driver, `from_arrays` in the worker (the path now).

First 2 workers take the dataset, then the other 6 (one at a time: the torch path's transient
copies would otherwise add up). After each step every holding worker's memory is read from
/proc/PID/smaps_rollup (what psutil's `memory_full_info` reads): USS (its private pages) and PSS
(shared pages divided among the processes mapping them), each also minus the same worker's
figure before it took the dataset. "Copies on the node" = (the workers' added USS + the object
store's copy) / the dataset's size; the driver's own copy, loaded from disk, is not counted.

    python benchmarks/data_memory.py                         # MNIST, CelebA-sized at 1/4 size, and at full size (numpy only); ~10 min
    python benchmarks/data_memory.py --celeba-images 20000 --full-celeba 0   # smaller
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, local_ray, machine, median, table, write_json  # noqa: E402

from regene_search.data.dataset import ImageData  # noqa: E402
from regene_search.data.shared import from_arrays, shared_mapping, to_arrays  # noqa: E402

MIB = 2**20
WORKERS = (2, 8)
# CelebA's official partition (202,599 aligned images) in shares, for the synthetic stand-in.
CELEBA_SPLITS = {"train": 162_770, "val": 19_867, "test": 19_962}
CELEBA_IMAGES = sum(CELEBA_SPLITS.values())


def celeba_sized(images: int, seed: int = 0) -> ImageData:
    """Random 64x64 RGB uint8 images split like CelebA (random bytes: no page is a shared zero page)."""
    gen = torch.Generator().manual_seed(seed)
    split = {}
    for name, count in CELEBA_SPLITS.items():
        n = max(1, round(images * count / CELEBA_IMAGES))
        split[f"{name}_x"] = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=gen)
        split[f"{name}_y"] = torch.randint(0, 2, (n,), generator=gen)
    return ImageData("celeba-sized", ("female", "male"), **split)


def mnist() -> ImageData:
    from regene_search.data import load_dataset

    return load_dataset("mnist", SHARED_DATA, seed=0)


def dataset_bytes(data: ImageData) -> int:
    return sum(t.nbytes for t in vars(data).values() if isinstance(t, torch.Tensor))


def memory(pid: int) -> dict[str, int]:
    """USS and PSS of a process in bytes, from /proc/PID/smaps_rollup (psutil's source)."""
    kib = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        kib[key.rstrip(":")] = int(value)
    return {"uss": (kib["Private_Clean"] + kib["Private_Dirty"] + kib.get("Private_Hugetlb", 0)) * 1024, "pss": kib["Pss"] * 1024}


def object_store_bytes() -> int | None:
    """Bytes used in this node's object store (Ray's own memory summary), None if it cannot be read."""
    from ray._private.internal_api import memory_summary

    match = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True))
    return int(match.group(1)) * MIB if match else None


@ray.remote(num_cpus=0)
class TrialWorker:
    """A worker process holding the dataset as a trial does (num_cpus=0: eight fit on two cores)."""

    def __init__(self) -> None:
        self.data = None

    def pid(self) -> int:
        return os.getpid()

    def take(self, boxed_ref: list, path: str) -> str | None:
        got = ray.get(boxed_ref[0])  # what tune.with_parameters' registry does in the trainable
        self.data = from_arrays(got) if path == "numpy" else got
        del got
        gc.collect()
        for value in vars(self.data).values():  # read every byte, as an epoch reads every image
            if isinstance(value, torch.Tensor) and value.numel():
                value.view(torch.uint8).max()
        return shared_mapping(self.data.train_x)


@contextlib.contextmanager
def fresh_ray(attempts: int = 3):
    """`local_ray`, tried again after a pause when Ray's start times out (it does on a machine loaded to 30+)."""
    for attempt in range(1, attempts + 1):
        try:
            context = local_ray(num_cpus=2)
            context.__enter__()
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
            if attempt == attempts:
                raise
            print(f"  Ray did not start ({str(exc).splitlines()[0]}); again in 30 s", flush=True)
            time.sleep(30)
            continue
        try:
            yield
        finally:
            context.__exit__(None, None, None)
        return


def measure(name: str, make: Callable[[], ImageData], path: str) -> list[dict]:
    """Rows for 2 and 8 workers holding the dataset `make()` shipped by `path`, in a fresh Ray."""
    rows = []
    with fresh_ray():
        data = make()
        size = dataset_bytes(data)
        ref = ray.put(to_arrays(data) if path == "numpy" else data)
        del data  # the driver's copy is the same in both paths; keep only the store's
        gc.collect()
        workers = [TrialWorker.remote() for _ in range(max(WORKERS))]
        pids = ray.get([w.pid.remote() for w in workers])
        time.sleep(2)  # let start-up allocations settle before the baseline
        baseline = {pid: memory(pid) for pid in pids}
        places: list[str | None] = []
        for n in WORKERS:
            for worker in workers[len(places) : n]:
                places.append(ray.get(worker.take.remote([ref], path)))
            now = {pid: memory(pid) for pid in pids[:n]}
            added_uss = [now[p]["uss"] - baseline[p]["uss"] for p in pids[:n]]
            added_pss = [now[p]["pss"] - baseline[p]["pss"] for p in pids[:n]]
            store = object_store_bytes()
            rows.append({
                "dataset": name, "path": path, "workers": n, "dataset_bytes": size, "object_store_bytes": store,
                "uss_per_worker": median(now[p]["uss"] for p in pids[:n]), "pss_per_worker": median(now[p]["pss"] for p in pids[:n]),
                "added_uss_per_worker": median(added_uss), "added_pss_per_worker": median(added_pss),
                "workers_pss_total": sum(now[p]["pss"] for p in pids[:n]), "workers_added_pss_total": sum(added_pss),
                "copies_on_node": (sum(added_uss) + (store or size)) / size,
                "in_shared_memory": sum(p is not None for p in places), "mapping": places[0],
            })
            r = rows[-1]
            print(f"  {name} {path} x{n}: +USS {r['added_uss_per_worker'] / MIB:,.0f} MiB/worker, copies on node {r['copies_on_node']:.2f}", flush=True)
        for worker in workers:
            ray.kill(worker)
        del ref
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--celeba-images", type=int, default=50_000, help="images of the CelebA-sized set measured on both paths (default 50,000 = 614 MB)")
    parser.add_argument("--full-celeba", type=int, default=CELEBA_IMAGES, help=f"images of the numpy-path-only run at full size (default {CELEBA_IMAGES:,}; 0 skips)")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_memory.json")
    args = parser.parse_args(argv)

    out: dict = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": []}
    runs = [("mnist", mnist, ("torch", "numpy")), (f"celeba-sized {args.celeba_images:,}", lambda: celeba_sized(args.celeba_images), ("torch", "numpy"))]
    if args.full_celeba:
        runs.append((f"celeba-sized {args.full_celeba:,}", lambda: celeba_sized(args.full_celeba), ("numpy",)))
    for name, make, paths in runs:
        for path in paths:
            print(f"{name}, {path} path ...", flush=True)
            out["rows"] += measure(name, make, path)
            gc.collect()

    print("\nDataset memory of N concurrent trial workers on one node (MiB; per worker: median over workers; '+': added by taking the dataset)")
    print(table([[
        r["dataset"], r["path"], r["workers"], f"{r['dataset_bytes'] / MIB:,.0f}", f"{(r['object_store_bytes'] or 0) / MIB:,.0f}",
        f"{r['uss_per_worker'] / MIB:,.0f}", f"+{r['added_uss_per_worker'] / MIB:,.0f}", f"{r['pss_per_worker'] / MIB:,.0f}",
        f"+{r['added_pss_per_worker'] / MIB:,.0f}", f"{r['workers_pss_total'] / MIB:,.0f}", f"{r['copies_on_node']:.2f}",
        f"{r['in_shared_memory']}/{r['workers']}",
    ] for r in out["rows"]], ["dataset", "path", "workers", "dataset", "object store", "USS/worker", "+USS", "PSS/worker", "+PSS", "sum PSS", "copies on node", "in plasma"]))
    write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
