"""The probe decoder's training step in NCHW vs channels_last, at each budget's probe size.

    .venv/bin/python benchmarks/probe_layout.py

One thread (a trial's share of a CPU); best of 3 x 20 steps after 5 warm-up steps, the input
latent and targets as the probe builds them. Prints a table and writes results/probe_layout.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, table, write_json  # noqa: E402

from regene_search.config import BUDGETS  # noqa: E402
from regene_search.models import Decoder  # noqa: E402

SHAPES = {"mnist": (28, 1), "cifar10": (32, 3)}
LATENT = 128


def step_seconds(probe, size: int, channels: int, channels_last: bool, repeats: int = 3, steps: int = 20) -> float:
    torch.manual_seed(0)
    decoder = Decoder(probe.decoder(image_size=size, channels=channels, latent_dim=LATENT))
    z = torch.randn(probe.batch_size, LATENT)
    target = torch.rand(probe.batch_size, channels, size, size)
    if channels_last:
        decoder = decoder.to(memory_format=torch.channels_last)
        target = target.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=probe.lr)

    def step() -> None:
        loss = F.l1_loss(decoder(z), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(5):
        step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_layout.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, records = [], []
    for budget in ("smoke", "default", "paper"):
        probe = BUDGETS[budget].probe
        for dataset, (size, channels) in SHAPES.items():
            nchw = step_seconds(probe, size, channels, channels_last=False)
            last = step_seconds(probe, size, channels, channels_last=True)
            records.append({"budget": budget, "dataset": dataset, "nchw_ms": nchw * 1e3, "channels_last_ms": last * 1e3, "speedup": nchw / last})
            rows.append([budget, dataset, f"{probe.batch_size}", f"{probe.base_width}", f"{nchw * 1e3:.1f}", f"{last * 1e3:.1f}", f"{nchw / last:.2f}x"])
    print(table(rows, ["budget", "shape", "batch", "width", "NCHW ms/step", "channels_last ms/step", "speedup"]))
    write_json(args.out, {"machine": machine(), "rows": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
