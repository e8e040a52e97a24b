"""Training steps in NCHW vs channels_last: the probe decoder, the stage decoder and the neutral ResNet.

    .venv/bin/python benchmarks/memory_layout.py

One thread (a trial's share of a CPU). For each model: 5 warm-up steps per layout, then 3 rounds
of 20 steps, NCHW and channels_last alternating round by round; the best round per layout is
reported. Prints a table and writes results/memory_layout.json. `runtime.on_device` puts every
model in channels_last because of these figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table, write_json  # noqa: E402

from regene_search.config import BUDGETS, DecoderConfig  # noqa: E402
from regene_search.models import Decoder  # noqa: E402
from regene_search.stages.decoder import WIDTH_BY_SIZE  # noqa: E402
from regene_search.stages.neutral import NeutralConfig, NeutralResNet  # noqa: E402

SHAPES = {"mnist": (28, 1), "cifar10": (32, 3)}
LATENT = 128
STAGE_BATCH = 64  # DecoderTraining and NeutralTraining batch size


def cases() -> list[tuple[str, str, Callable[[], nn.Module], Callable[[], torch.Tensor], Callable[[], torch.Tensor], Callable, int]]:
    """(model, shape, build, input, target, loss, batch) for every model the stages train."""
    out = []
    for dataset, (size, channels) in SHAPES.items():
        for budget in ("smoke", "default", "paper"):
            probe = BUDGETS[budget].probe
            out.append((f"probe decoder ({budget})", dataset, lambda p=probe, s=size, c=channels: Decoder(p.decoder(image_size=s, channels=c, latent_dim=LATENT)),
                        lambda b=probe.batch_size: torch.randn(b, LATENT), lambda b=probe.batch_size, s=size, c=channels: torch.rand(b, c, s, s), F.l1_loss, probe.batch_size))
        config = DecoderConfig(image_size=size, channels=channels, latent_dim=LATENT, base_width=WIDTH_BY_SIZE[size])
        out.append(("stage decoder", dataset, lambda c=config: Decoder(c), lambda: torch.randn(STAGE_BATCH, LATENT),
                    lambda s=size, c=channels: torch.rand(STAGE_BATCH, c, s, s), F.l1_loss, STAGE_BATCH))
        for depth in (8, 20):
            neutral = NeutralConfig(image_size=size, channels=channels, num_classes=10, depth=depth)
            out.append((f"neutral ResNet-{depth}", dataset, lambda n=neutral: NeutralResNet(n), lambda s=size, c=channels: torch.rand(STAGE_BATCH, c, s, s),
                        lambda: torch.randint(0, 10, (STAGE_BATCH,)), F.cross_entropy, STAGE_BATCH))
    return out


def make_step(build, make_input, make_target, loss_fn, channels_last: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model, x, target = build(), make_input(), make_target()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        target = target.contiguous(memory_format=torch.channels_last) if target.dim() == 4 else target
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = loss_fn(model(x), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def seconds_per_step(step: Callable[[], None], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_layout.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, records = [], []
    for name, dataset, build, make_input, make_target, loss_fn, batch in cases():
        steps = {last: make_step(build, make_input, make_target, loss_fn, last) for last in (False, True)}
        for step in steps.values():
            for _ in range(5):
                step()
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.rounds):
            for last, step in steps.items():
                best[last] = min(best[last], seconds_per_step(step, args.steps))
        nchw, cl = best[False] * 1e3, best[True] * 1e3
        records.append({"model": name, "dataset": dataset, "batch": batch, "nchw_ms": nchw, "channels_last_ms": cl, "speedup": nchw / cl})
        rows.append([name, dataset, str(batch), f"{nchw:.1f}", f"{cl:.1f}", f"{nchw / cl:.2f}x"])
        print(table(rows[-1:], ["model", "shape", "batch", "NCHW ms/step", "channels_last ms/step", "speedup"]).splitlines()[-1], flush=True)
    print()
    print(table(rows, ["model", "shape", "batch", "NCHW ms/step", "channels_last ms/step", "speedup"]))
    write_json(args.out, {"machine": machine(), "rounds": args.rounds, "steps": args.steps, "rows": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
