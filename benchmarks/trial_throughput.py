"""How fast is one trial, and how much of a search is spent training? Prints tables, writes JSON.

Four measurements, all in one run:

1. Training throughput (images/s) of our trial loop (`regene_search.trial.run_trial`: uint8
   tensors in memory, batch augmentation) against a naive torchvision-style baseline (a
   `Dataset` returning PIL images, per-sample `RandomCrop(padding) + ToTensor`, a `DataLoader`):
   same `Classifier`, optimiser, schedule, batch size, images and thread count; repetitions
   interleaved (ours, naive, ours, naive, ...); medians and the ratio. Also the input pipeline
   alone (no model), which is where the two differ.
2. The probe's share of a trial (`probe_seconds / (train_seconds + probe_seconds)` from
   run_trial's metrics) with the smoke and default budgets' probe settings at their train sizes,
   and where the probe's time goes (encoding, the decoder's Adam steps, validation accuracy).
3. Achieved FLOP/s of training (FlopCounterMode on one forward+backward step x steps/s) against
   a dense fp32 matmul peak measured here with the same thread count.
4. Overhead of a real Ray Tune search (`search/tuner.py:make_tuner`, 2 concurrent trials with 1
   CPU each): 1 - sum(train + probe seconds of all trials) / (wall seconds x concurrency).

    python benchmarks/trial_throughput.py            # defaults (~10-15 min on 2 shared cores)
    python benchmarks/trial_throughput.py --quick    # ~3 min
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from ray import tune
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, default_dataset, load, local_ray, machine, median, table, write_json  # noqa: E402

from regene_search.augment import augment_batch  # noqa: E402
from regene_search.config import BUDGETS, ProbeConfig, TrialConfig  # noqa: E402
from regene_search.models import Classifier  # noqa: E402
from regene_search.runtime import EVAL_BATCH, encode_all, to_float, warmup_cosine  # noqa: E402
from regene_search.trial import TrialSetup, accuracy_and_latents, probe_decoder_mae, probe_indices, run_trial  # noqa: E402

CPU = torch.device("cpu")
# A probe so small it costs next to nothing: used where only train_seconds is read.
TINY_PROBE = ProbeConfig(train_images=64, val_images=64, steps=1, batch_size=32)
MODELS = {
    "default": TrialConfig(),  # blocks 3, width 32, latent 256: the TrialConfig defaults
    "small": TrialConfig(blocks=2, base_width=8, latent_dim=64),  # the low end of the search spaces
}


# --- the naive baseline ----------------------------------------------------------------------


class PILDataset(Dataset):
    """What torchvision's MNIST/CIFAR10 datasets do: one PIL image per __getitem__, then transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        x = images.numpy()
        self.images = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1).copy()  # HW or HWC uint8
        self.mode = "L" if x.shape[1] == 1 else "RGB"
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i], mode=self.mode)), self.labels[i]


def naive_transform(size: int, hflip: bool):
    pad = max(2, size // 16)  # the same translation range as regene_search.augment.augment_batch
    steps = [T.RandomCrop(size, padding=pad, padding_mode="reflect")]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor()])


def naive_loader(data, config: TrialConfig, hflip: bool, workers: int) -> DataLoader:
    dataset = PILDataset(data.train_x, data.train_y, naive_transform(data.image_size, hflip))
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers)


def naive_epoch(data, config: TrialConfig, hflip: bool, workers: int, seed: int) -> float:
    """One epoch of the textbook loop; returns training images/second (same model/optimiser/schedule)."""
    torch.manual_seed(seed)
    model = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(data.train_x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(config.epochs * steps))
    loader = naive_loader(data, config, hflip, workers)
    model.train()
    start = time.perf_counter()
    seen, running = 0, 0.0
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels, label_smoothing=config.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item() * len(labels)
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def ours_epoch(data, config: TrialConfig, hflip: bool, seed: int) -> float:
    """One epoch of the real trial loop (run_trial, tiny probe); returns its own images/second."""
    history = run_trial(data, config, TrialSetup(probe=TINY_PROBE, seed=seed, hflip=hflip), device=CPU)
    return float(history[-1]["images_per_second"])


# --- the input pipelines alone -----------------------------------------------------------------


def ours_pipeline(data, batch_size: int, hflip: bool, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    seen = 0
    for idx in torch.randperm(len(data.train_x), generator=gen).split(batch_size):
        images = augment_batch(to_float(data.train_x[idx], CPU), hflip=hflip, generator=gen)
        labels = data.train_y[idx]
        seen += min(len(labels), len(images))
    return seen / (time.perf_counter() - start)


def naive_pipeline(data, batch_size: int, hflip: bool, workers: int) -> float:
    loader = naive_loader(data, TrialConfig(batch_size=batch_size), hflip, workers)
    start = time.perf_counter()
    seen = 0
    for _, labels in loader:
        seen += len(labels)
    return seen / (time.perf_counter() - start)


# --- FLOPs and the matmul peak -----------------------------------------------------------------


def train_step_flops(data, config: TrialConfig) -> float:
    """FLOPs of one training step (forward + backward) of a batch, counted by FlopCounterMode."""
    model = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
    model.train()
    x = to_float(data.train_x[: config.batch_size], CPU)
    y = data.train_y[: config.batch_size]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def matmul_gflops(n: int = 2048, reps: int = 3) -> float:
    """Dense fp32 matmul GFLOP/s (best of `reps`) with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# --- memory layout: NCHW (what trials use on CPU) vs channels_last ----------------------------------


def layout_check(data, batch_size: int, repeats: int, steps: int = 4) -> dict:
    """ms per training step of the classifiers and of the probe's decoder, NCHW vs channels_last, interleaved.

    run_trial and the probe use channels_last only on CUDA; this measures what it would give on CPU.
    """
    from regene_search.models import Decoder

    def stepper(kind: str, channels_last: bool):
        torch.manual_seed(0)
        if kind == "probe decoder":
            model = Decoder(BUDGETS["default"].probe.decoder(image_size=data.image_size, channels=data.channels, latent_dim=256))
            x, target = torch.randn(64, 256), to_float(data.train_x[:64], CPU)
            loss_fn = lambda out: F.l1_loss(out, target)  # noqa: E731
        else:
            model = Classifier(MODELS[kind].encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
            x, labels = to_float(data.train_x[:batch_size], CPU), data.train_y[:batch_size]
            loss_fn = lambda out: F.cross_entropy(out, labels)  # noqa: E731
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> None:
            loss = loss_fn(model(x))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        step()
        return step

    steppers = {(kind, cl): stepper(kind, cl) for kind in (*MODELS, "probe decoder") for cl in (False, True)}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in steppers}
    for _ in range(repeats):
        for key, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[key].append((time.perf_counter() - start) / steps * 1000)
    return {
        kind: {"nchw_ms_per_step": median(times[(kind, False)]), "channels_last_ms_per_step": median(times[(kind, True)]),
               "speedup": median(times[(kind, False)]) / median(times[(kind, True)])}
        for kind in (*MODELS, "probe decoder")
    }


def eval_check(data, repeats: int) -> dict:
    """Seconds for `trial.accuracy_and_latents` over the validation images as it is (EVAL_BATCH 512, NCHW) vs variants, interleaved."""
    config = MODELS["default"]
    model = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes)).eval()
    model_cl = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
    model_cl = model_cl.to(memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def forward_all(net, batch: int, channels_last: bool) -> None:
        for start in range(0, len(data.val_x), batch):
            x = to_float(data.val_x[start : start + batch], CPU)
            net(x.contiguous(memory_format=torch.channels_last) if channels_last else x).argmax(1)

    cases = {
        f"accuracy() as is (batch {EVAL_BATCH}, NCHW)": lambda: accuracy_and_latents(model, data.val_x, data.val_y, CPU)[0],
        "batch 128, NCHW": lambda: forward_all(model, 128, False),
        f"batch {EVAL_BATCH}, channels_last": lambda: forward_all(model_cl, EVAL_BATCH, True),
        "batch 128, channels_last": lambda: forward_all(model_cl, 128, True),
    }
    for case in cases.values():
        case()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    base = median(times[next(iter(cases))])
    return {"images": len(data.val_x), **{name: {"seconds": median(v), "speedup": base / median(v)} for name, v in times.items()}}


# --- what a Ray trial worker imports -------------------------------------------------------------


def import_seconds(repeats: int) -> dict:
    """Fresh-interpreter import time of what a Tune worker loads for our trainable, vs its unavoidable core."""
    import subprocess

    statements = {
        "regene_search.search.tuner": "import regene_search.search.tuner",
        "torch + ray.tune + optuna": "import torch, ray.tune, optuna",
        "torch + ray.tune": "import torch, ray.tune",
    }
    times: dict[str, list[float]] = {k: [] for k in statements}
    for _ in range(repeats):
        for name, statement in statements.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT)
            times[name].append(time.perf_counter() - start)
    return {name: median(v) for name, v in times.items()}


# --- the probe's share -------------------------------------------------------------------------


def probe_share(dataset: str, budget_name: str, train_images: int, seed: int) -> dict:
    """One real epoch with the budget's probe at `train_images`; the share at the budget's own size too."""
    budget = BUDGETS[budget_name]
    data = load(dataset, train=train_images, val=budget.val_images, seed=seed)
    config = TrialConfig(epochs=1)
    metrics = run_trial(data, config, TrialSetup(probe=budget.probe, seed=seed), device=CPU)[-1]
    train_s, probe_s = metrics["train_seconds"], metrics["probe_seconds"]
    # Where the probe's time goes (same functions run_trial calls, timed one by one).
    model = Classifier(config.encoder(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes))
    p_train, p_val = probe_indices(len(data.train_x), len(data.val_x), budget.probe)
    t0 = time.perf_counter()
    val_z = encode_all(model, data.val_x[p_val], CPU)
    train_z = encode_all(model, data.train_x[p_train], CPU)
    t1 = time.perf_counter()
    probe_decoder_mae(train_z, data.train_x[p_train], val_z, data.val_x[p_val], budget.probe, CPU)
    t2 = time.perf_counter()
    accuracy_and_latents(model, data.val_x, data.val_y, CPU)[0]
    t3 = time.perf_counter()
    full_train = budget.train_images or train_images
    train_at_budget = full_train / metrics["images_per_second"]
    return {
        "budget": budget_name,
        "probe": dataclasses.asdict(budget.probe),
        "train_images": len(data.train_x),
        "val_images": len(data.val_x),
        "train_seconds": train_s,
        "probe_seconds": probe_s,
        "probe_share": probe_s / (train_s + probe_s),
        "budget_train_images": full_train,
        "probe_share_at_budget_size": probe_s / (train_at_budget + probe_s),
        "breakdown_seconds": {"encode": t1 - t0, "decoder_steps": t2 - t1, "val_accuracy": t3 - t2},
        "decoder_ms_per_step": (t2 - t1) / budget.probe.steps * 1000,
    }


# --- Ray Tune search overhead ------------------------------------------------------------------


class ResultLog(tune.Callback):
    """A Tune callback keeping every reported result, in arrival order (driver side)."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.results.append({"trial_id": trial.trial_id, "arrived": time.time(), **result})


def ray_overhead(dataset: str, trials: int, train: int, val: int, seed: int) -> dict:
    from regene_search.search.schedulers import build_scheduler
    from regene_search.search.space import SPACES_DIR, load_space
    from regene_search.search.tuner import SearchSettings, make_tuner

    budget = BUDGETS["smoke"]
    data = load(dataset, train=train, val=val, seed=seed)
    space = load_space(SPACES_DIR / f"{dataset}.toml")
    settings = SearchSettings(trials=trials, sampler="tpe", max_concurrent=2, cpus_per_trial=1.0, seed=seed)
    setup = TrialSetup(probe=budget.probe, seed=seed, hflip=dataset == "shapes")
    init_start = time.perf_counter()
    with local_ray(num_cpus=2), tempfile.TemporaryDirectory(prefix="rs-bench-tune-", dir="/tmp") as storage:
        init_seconds = time.perf_counter() - init_start
        log = ResultLog()
        tuner = make_tuner(
            data=data, setup=setup, budget=budget, settings=settings, param_space=space.to_tune(),
            storage=Path(storage), scheduler=build_scheduler("fifo", budget.max_epochs), callbacks=[log],
        )
        start, fit_started = time.perf_counter(), time.time()
        grid = tuner.fit()
        wall, fit_ended = time.perf_counter() - start, time.time()
        errors = sum(r.error is not None for r in grid)
    shutdown_seconds = time.perf_counter() - start - wall
    results = [r for r in log.results if "train_seconds" in r]
    # Timeline per trial: its trainable started at (first arrival - first time_total_s), ended at its last arrival.
    spans: dict[str, list[float]] = {}
    for r in results:
        began = r["arrived"] - r["time_total_s"]
        span = spans.setdefault(r["trial_id"], [began, r["arrived"]])
        span[0], span[1] = min(span[0], began), max(span[1], r["arrived"])
    starts = sorted(s for s, _ in spans.values())
    busy = sum(e - s for s, e in spans.values())
    train = sum(r["train_seconds"] for r in results)
    probe = sum(r["probe_seconds"] for r in results)
    per_trial_total: dict[str, float] = {}
    for r in results:
        per_trial_total[r["trial_id"]] = max(per_trial_total.get(r["trial_id"], 0.0), r["time_total_s"])
    in_trainable = sum(per_trial_total.values())
    capacity = wall * settings.max_concurrent
    return {
        "dataset": dataset,
        "trials": trials,
        "errors": errors,
        "train_images": len(data.train_x),
        "val_images": len(data.val_x),
        "epochs_reported": len(results),
        "concurrency": settings.max_concurrent,
        "cpus_per_trial": settings.cpus_per_trial,
        "ray_init_seconds": init_seconds,
        "ray_shutdown_seconds": shutdown_seconds,
        "fit_wall_seconds": wall,
        "train_seconds": train,
        "probe_seconds": probe,
        "trainable_seconds": in_trainable,  # Tune's time_total_s summed over trials
        "overhead": 1 - (train + probe) / capacity,
        "overhead_including_ray_init": 1 - (train + probe) / ((wall + init_seconds) * settings.max_concurrent),
        # The overhead split: inside the trainable but not training/probing (model build, checkpoint
        # save + report), and outside any trainable (worker start + torch import, Tune's loop, idle slots).
        "overhead_in_trainable": (in_trainable - train - probe) / capacity,
        # The same, counted from the moment the first trainable started (i.e. without worker start-up).
        "overhead_after_first_trial_started": 1 - (train + probe) / ((fit_ended - starts[0]) * settings.max_concurrent) if starts else None,
        "overhead_outside_trainable": 1 - in_trainable / capacity,
        # Where the outside-trainable slot time is: before the first trainable of each slot started
        # (worker process start, imports, data fetch), after the last report of the search (straggler
        # and shutdown), and between consecutive trials of a reused worker.
        "timeline_seconds": {
            "fit_start_to_first_trial": starts[0] - fit_started if starts else None,
            "fit_start_to_second_trial": starts[1] - fit_started if len(starts) > 1 else None,
            "last_report_to_fit_end": fit_ended - max(e for _, e in spans.values()) if spans else None,
            "slot_seconds_busy": busy,
            "slot_seconds_idle": capacity - busy,
        },
        "trial_spans": {k: [s - fit_started, e - fit_started] for k, (s, e) in spans.items()},
    }


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "shapes"), default=default_dataset())
    parser.add_argument("--images", type=int, default=4096, help="training images per timed epoch (default 4096)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per loop (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both loops (default 1 = one Tune trial's CPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the naive baseline (default 0: same threads)")
    parser.add_argument("--ray-trials", type=int, default=6, help="trials of the Ray overhead search (default 6)")
    parser.add_argument("--ray-train", type=int, default=5000, help="train images of the Ray overhead search (default 5000)")
    parser.add_argument("--skip-ray", action="store_true", help="skip the Ray Tune overhead measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "trial_throughput.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.ray_trials, args.ray_train = min(args.images, 1024), min(args.repeats, 3), min(args.ray_trials, 4), min(args.ray_train, 2000)

    torch.set_num_threads(args.threads)
    hflip = args.dataset == "shapes"
    data = load(args.dataset, train=args.images, val=256, seed=args.seed)
    out: dict = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(f"dataset {args.dataset} ({data.image_size}px x{data.channels}), {len(data.train_x)} images/epoch, "
          f"batch {args.batch_size}, {args.threads} thread(s), {args.repeats} interleaved repeats; load avg {out['machine']['load_average_at_start']}")

    # 1. throughput, interleaved -----------------------------------------------------------------
    samples: dict[str, list[float]] = {}
    peaks: list[float] = []

    def record(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for name, config in MODELS.items():  # warm-up: first-call allocations, oneDNN kernel selection
        config = dataclasses.replace(config, batch_size=args.batch_size, epochs=1, augment=True)
        small = load(args.dataset, train=2 * args.batch_size, val=64, seed=args.seed)
        ours_epoch(small, config, hflip, args.seed)
        naive_epoch(small, config, hflip, args.workers, args.seed)
    for rep in range(args.repeats):
        record("pipeline/ours", ours_pipeline(data, args.batch_size, hflip, args.seed + rep))
        record("pipeline/naive", naive_pipeline(data, args.batch_size, hflip, args.workers))
        for name, config in MODELS.items():
            config = dataclasses.replace(config, batch_size=args.batch_size, epochs=1, augment=True)
            record(f"{name}/ours", ours_epoch(data, config, hflip, args.seed + rep))
            record(f"{name}/naive", naive_epoch(data, config, hflip, args.workers, args.seed + rep))
        peaks.append(matmul_gflops())
        print(f"  repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items()) + f" img/s; matmul {peaks[-1]:.1f} GFLOP/s", flush=True)

    rows, throughput = [], {}
    for what in ("pipeline", *MODELS):
        ours, naive = median(samples[f"{what}/ours"]), median(samples[f"{what}/naive"])
        ratios = [o / n for o, n in zip(samples[f"{what}/ours"], samples[f"{what}/naive"])]
        throughput[what] = {"ours_images_per_second": ours, "naive_images_per_second": naive, "ratio_of_medians": ours / naive,
                            "median_paired_ratio": median(ratios), "ours_samples": samples[f"{what}/ours"], "naive_samples": samples[f"{what}/naive"]}
        label = "input pipeline only (no model)" if what == "pipeline" else f"training, {what} model"
        rows.append([label, f"{ours:,.0f}", f"{naive:,.0f}", f"{ours / naive:.2f}x", f"{min(ratios):.2f}-{max(ratios):.2f}"])
    out["throughput"] = throughput
    print("\nTraining throughput, images/s (medians of interleaved repeats)")
    print(table(rows, ["what", "ours", "naive", "ratio", "paired range"]))

    # 3. FLOP/s ----------------------------------------------------------------------------------
    peak = median(peaks)
    flops_rows, out["flops"] = [], {"matmul_peak_gflops_median": peak, "matmul_peak_gflops_best": max(peaks), "matmul_samples": peaks}
    for name, config in MODELS.items():
        config = dataclasses.replace(config, batch_size=args.batch_size)
        step = train_step_flops(data, config)
        per_image = step / args.batch_size
        achieved = per_image * throughput[name]["ours_images_per_second"] / 1e9
        out["flops"][name] = {"flops_per_step": step, "flops_per_image": per_image, "achieved_gflops": achieved, "percent_of_peak": 100 * achieved / peak}
        flops_rows.append([name, f"{per_image / 1e6:.1f}", f"{achieved:.2f}", f"{peak:.1f}", f"{100 * achieved / peak:.1f}%"])
    print(f"\nAchieved FLOP/s of our training loop vs a {args.threads}-thread fp32 2048x2048 matmul (median)")
    print(table(flops_rows, ["model", "MFLOP/image (fwd+bwd)", "achieved GFLOP/s", "matmul GFLOP/s", "of peak"]))

    # layout and imports: where a trial's time could go down -----------------------------------------
    print("  memory layout check ...", flush=True)
    out["layout"] = layout_check(data, args.batch_size, args.repeats)
    print("\nTraining step, ms (1 thread, medians of interleaved repeats): NCHW (used on CPU today) vs channels_last")
    print(table([[k, f"{v['nchw_ms_per_step']:.1f}", f"{v['channels_last_ms_per_step']:.1f}", f"{v['speedup']:.2f}x"] for k, v in out["layout"].items()],
                ["model", "NCHW", "channels_last", "speed-up"]))
    out["eval"] = eval_check(load(args.dataset, train=256, val=5000, seed=args.seed), args.repeats)
    print(f"\nValidation forward pass over {out['eval']['images']} images (default model, as in trial.accuracy_and_latents / encode_all), seconds")
    print(table([[k, f"{v['seconds']:.2f}", f"{v['speedup']:.2f}x"] for k, v in out["eval"].items() if k != "images"], ["variant", "seconds", "speed-up"]))
    out["imports"] = import_seconds(1 if args.quick else 3)
    print("\nFresh-interpreter import seconds (what every new Tune trial worker pays once)")
    print(table([[k, f"{v:.2f}"] for k, v in out["imports"].items()], ["import", "seconds"]))

    # 2. probe share -----------------------------------------------------------------------------
    out["probe"] = []
    for budget_name in ("smoke", "default"):
        size = BUDGETS[budget_name].train_images
        if args.quick:
            size = min(size, 2000)
        print(f"  probe share: {budget_name} budget, {size} train images ...", flush=True)
        out["probe"].append(probe_share(args.dataset, budget_name, size, args.seed))
    probe_rows = [
        [p["budget"], f"{p['probe']['steps']} steps, {p['probe']['train_images']}/{p['probe']['val_images']} imgs", p["train_images"],
         f"{p['train_seconds']:.1f}", f"{p['probe_seconds']:.1f}", f"{100 * p['probe_share']:.0f}%",
         f"{100 * p['probe_share_at_budget_size']:.0f}% @ {p['budget_train_images']}",
         " / ".join(f"{v:.1f}" for v in p["breakdown_seconds"].values())]
        for p in out["probe"]
    ]
    print("\nThe probe's share of a trial epoch (default model, 1 thread)")
    print(table(probe_rows, ["budget", "probe", "train imgs", "train s", "probe s", "share", "share at budget size", "encode/decoder/acc s"]))

    # 4. Ray Tune overhead -----------------------------------------------------------------------
    if not args.skip_ray:
        print(f"\n  Ray Tune search: {args.ray_trials} trials, 2 concurrent x 1 CPU, {args.ray_train} train images, smoke budget ...", flush=True)
        r = out["ray"] = ray_overhead(args.dataset, args.ray_trials, args.ray_train, 1000, args.seed)
        print("\nRay Tune search overhead (share of trial-slot time not spent training or probing)")
        print(table([[
            r["trials"], r["epochs_reported"], f"{r['fit_wall_seconds']:.1f}", f"{r['ray_init_seconds']:.1f}",
            f"{r['train_seconds'] + r['probe_seconds']:.1f}", f"{100 * r['overhead']:.1f}%",
            f"{100 * r['overhead_in_trainable']:.1f}% / {100 * r['overhead_outside_trainable']:.1f}%",
            f"{100 * r['overhead_including_ray_init']:.1f}%",
        ]], ["trials", "epochs", "fit wall s", "ray.init s", "train+probe s", "overhead", "in/outside trainable", "incl. ray.init"]))
        t = r["timeline_seconds"]
        print(f"timeline: first trial started {t['fit_start_to_first_trial']:.1f} s after fit(), second {t['fit_start_to_second_trial']:.1f} s; "
              f"fit() returned {t['last_report_to_fit_end']:.1f} s after the last report; slots idle {t['slot_seconds_idle']:.1f} of {2 * r['fit_wall_seconds']:.1f} slot-s; "
              f"overhead counted from the first trial's start: {100 * r['overhead_after_first_trial_started']:.1f}%")

    write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
