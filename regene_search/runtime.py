"""Running models: device, autocast, memory layout, batched inference, LR schedule, checkpoints, Ray tasks.

Every stage and the classifier trial run their models through these, so a GPU, bf16 autocast and
channels_last apply everywhere alike and the run folder's checkpoints are written one way.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from .data.dataset import ImageData
from .data.shared import from_arrays, to_arrays
from .errors import RunDirError
from .storage import Location

EVAL_BATCH = 128  # larger batches ran slower on CPU (benchmarks/README.md); GPUs barely care
T = TypeVar("T")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 on CPU (CPU bf16 is slower on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1] on `device`, channels_last (faster convs on GPUs and on CPU)."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def on_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`model` on `device` in the channels_last layout its image inputs (`to_float`) arrive in.

    Faster on CPU too, for every model the project trains (benchmarks/memory_layout.py).
    """
    return model.to(device).to(memory_format=torch.channels_last)


@torch.no_grad()
def infer(forward: Callable[..., T], *inputs: torch.Tensor, device: torch.device, batch: int = EVAL_BATCH) -> list[T]:
    """`forward` on aligned batches of `inputs` (sliced along dim 0) under no_grad and autocast; one result per batch.

    `forward` moves its slices to `device` itself (uint8 images with `to_float`); put the model in
    eval mode first.
    """
    results = []
    for start in range(0, len(inputs[0]), batch):
        with autocast(device):
            results.append(forward(*(x[start : start + batch] for x in inputs)))
    return results


def concat(parts: Sequence[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    """`torch.cat(parts)`, or `empty` (the right shape and dtype for zero rows) when there are none."""
    return torch.cat(list(parts)) if parts else empty


def encode_all(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The latents (float32, on `device`) of uint8 images, through a classifier's `encode`."""
    model.eval()
    parts = infer(lambda x: model.encode(to_float(x, device)).float(), images, device=device)
    return concat(parts, torch.zeros(0, model.config.latent_dim, device=device))


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.1, *, cosine_from_start: bool = False) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over the first `warmup_fraction` of steps, then cosine decay to zero.

    The cosine spans the steps after the warm-up; with `cosine_from_start` it spans all steps and
    the warm-up ramp caps it (the form the decoder and neutral net were tuned with: their tiny
    test-sized runs are sensitive to the schedule, so it is kept).
    """
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if cosine_from_start:
            return min((step + 1) / warmup, 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total_steps))))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def lr_schedule(
    optimiser: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1, *, cosine_from_start: bool = False
) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine` as a per-step scheduler; defined for any number of steps, even one."""
    return torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(max(1, total_steps), warmup_fraction, cosine_from_start=cosine_from_start))


def save_checkpoint(state: dict[str, Any], target: Location | str | os.PathLike) -> None:
    """A checkpoint dict (tensors and plain containers), written atomically to a local path or a URI."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    Location.of(target).write_bytes(buffer.getvalue())


def load_checkpoint(source: Location | str | os.PathLike, missing_hint: str) -> dict[str, Any]:
    """A checkpoint of a run, tensors and plain containers only (`weights_only=True`)."""
    source = Location.of(source)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{source} is missing: {missing_hint}") from None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def run_tasks(fn: Callable[..., T], calls: Sequence[tuple], *, cpus: float, gpus: float, report: Callable[[str], None] | None = None) -> list[T]:
    """`fn(*call)` for every call: parallel Ray tasks with these resources when Ray is up, else in order here.

    On Ray an argument object used by several calls (the dataset, a backbone) goes to the object
    store once, a dataset as numpy arrays that the tasks of a node map instead of copying
    (data/shared.py), and each task uses as many torch threads as it has CPUs; it lands on a GPU
    when the cluster has one. With `report`, `fn` is also given `report=`: the lines it reports (one
    per epoch, say) reach `report` here, on the driver, while the tasks run.
    """
    import ray

    if not ray.is_initialized():
        return [fn(*call, report=report) if report else fn(*call) for call in calls]
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_with_threads)
    uses = Counter(id(value) for call in calls for value in call)
    stored: dict[int, Any] = {}
    for value in (value for call in calls for value in call):
        if id(value) not in stored and (uses[id(value)] > 1 or isinstance(value, ImageData)):
            stored[id(value)] = ray.put(_SharedImages(to_arrays(value)) if isinstance(value, ImageData) else value)
    threads = max(1, int(round(cpus)))
    if report is None:
        return ray.get([task.remote(fn, threads, None, *(stored.get(id(v), v) for v in call)) for call in calls])
    from ray.util.queue import Queue

    lines = Queue(actor_options={"num_cpus": 0})  # the tasks' reports, drained here while they run
    try:
        refs = [task.remote(fn, threads, lines, *(stored.get(id(v), v) for v in call)) for call in calls]
        pending = refs
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for line in lines.get_nowait_batch(lines.qsize()):
                report(line)
        for line in lines.get_nowait_batch(lines.qsize()):
            report(line)
        return ray.get(refs)
    finally:
        lines.shutdown()


@dataclass(frozen=True)
class _SharedImages:
    """An `ImageData` on its way to a task, as the arrays of `to_arrays`."""

    arrays: dict[str, Any]


def _with_threads(fn: Callable[..., T], threads: int, lines: Any, *args: Any) -> T:
    torch.set_num_threads(threads)
    args = tuple(from_arrays(a.arrays) if isinstance(a, _SharedImages) else a for a in args)
    return fn(*args) if lines is None else fn(*args, report=lines.put)
