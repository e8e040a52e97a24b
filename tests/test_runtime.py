"""runtime: batched inference, the LR schedule, checkpoints and Ray-or-in-process tasks, on real torch and Ray."""

import math
import os

import pytest
import torch

from regene_search.config import EncoderConfig
from regene_search.errors import RunDirError
from regene_search.models import Classifier
from regene_search.runtime import (
    concat,
    encode_all,
    infer,
    load_checkpoint,
    lr_schedule,
    on_device,
    run_tasks,
    save_checkpoint,
    to_float,
    warmup_cosine,
)

CPU = torch.device("cpu")


def test_infer_slices_aligned_inputs_in_batches_without_grad():
    x, y = torch.arange(10.0, requires_grad=True), torch.arange(10) * 2
    seen = infer(lambda a, b: (len(a), torch.is_grad_enabled(), (a.detach() * 2 == b).all().item()), x, y, device=CPU, batch=4)
    assert seen == [(4, False, True), (4, False, True), (2, False, True)]
    assert infer(lambda a: a, torch.zeros(0, 3), device=CPU) == []


def test_concat_keeps_the_shape_of_zero_rows():
    empty = torch.zeros(0, 5)
    assert concat([], empty) is empty
    assert concat([torch.ones(2, 5), torch.ones(1, 5)], empty).shape == (3, 5)


def test_encode_all_matches_one_unbatched_pass():
    torch.manual_seed(0)
    model = on_device(Classifier(EncoderConfig(image_size=28, channels=1, num_classes=10, blocks=2, base_width=8, latent_dim=16)), CPU).eval()
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        whole = model.encode(to_float(images, CPU))
    assert torch.allclose(encode_all(model, images, CPU), whole, atol=1e-5)
    assert encode_all(model, images[:0], CPU).shape == (0, 16)


def test_to_float_scales_to_unit_range_in_channels_last():
    x = to_float(torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1).expand(2, 2, 3, 3), CPU)
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_warmup_cosine_ramps_then_decays_to_zero():
    factor = warmup_cosine(100, warmup_fraction=0.1)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 100))


def test_lr_schedule_steps_an_optimiser_even_for_one_step():
    optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    schedule = lr_schedule(optimiser, 1)
    assert optimiser.param_groups[0]["lr"] == pytest.approx(0.5)
    optimiser.step()
    schedule.step()
    assert math.isfinite(optimiser.param_groups[0]["lr"])


def test_checkpoints_round_trip_and_refuse_code(tmp_path):
    state = {"format": "x", "model": {"w": torch.arange(3.0)}, "epoch": 2}
    save_checkpoint(state, tmp_path / "a" / "c.pt")
    loaded = load_checkpoint(tmp_path / "a" / "c.pt", "hint")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert [p for p in os.listdir(tmp_path / "a")] == ["c.pt"]  # no temp file left behind
    with pytest.raises(RunDirError, match="missing: run it first"):
        load_checkpoint(tmp_path / "nope.pt", "run it first")
    torch.save({"bad": Classifier}, tmp_path / "code.pt")  # a pickled class: weights_only refuses it
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(tmp_path / "code.pt", "hint")


def _threads_and_sum(shared: torch.Tensor, offset: int) -> tuple[int, float]:
    return torch.get_num_threads(), float(shared.sum()) + offset


def test_run_tasks_in_process_keeps_call_order():
    shared = torch.ones(4)
    assert [r[1] for r in run_tasks(_threads_and_sum, [(shared, 1), (shared, 2)], cpus=1, gpus=0)] == [5.0, 6.0]


def test_run_tasks_on_ray_use_the_requested_threads(ray_instance):
    shared = torch.ones(1000)
    results = run_tasks(_threads_and_sum, [(shared, 0), (shared, 10), (shared, 20)], cpus=2, gpus=0)
    assert results == [(2, 1000.0), (2, 1010.0), (2, 1020.0)]


def _where_the_images_live(data, offset: int) -> tuple[str | None, str | None, int]:
    from regene_search.data.shared import shared_mapping

    return shared_mapping(data.train_x), shared_mapping(data.test_x), int(data.train_x.sum()) + offset


def test_run_tasks_on_ray_map_one_shared_copy_of_a_dataset(ray_instance):
    from regene_search.data.dataset import ImageData

    images = torch.arange(64 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(64, 1, 28, 28)
    labels = torch.arange(64) % 10
    data = ImageData("t", tuple(map(str, range(10))), images, labels, images[:8].clone(), labels[:8].clone(), images[:16].clone(), labels[:16].clone())
    results = run_tasks(_where_the_images_live, [(data, 0), (data, 1)], cpus=1, gpus=0)
    total = int(images.sum())
    assert [r[2] for r in results] == [total, total + 1]
    mappings = {r[0] for r in results} | {r[1] for r in results}
    assert None not in mappings and len(mappings) == 1, mappings  # both tasks, both splits: the object store's one file
    assert "plasma" in mappings.pop()


def test_cosine_from_start_is_capped_by_the_ramp_and_spans_every_step():
    factor = warmup_cosine(80, warmup_fraction=0.125, cosine_from_start=True)
    warmup = 10
    for step in range(80):
        ramp, cosine = (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / 80))
        assert factor(step) == pytest.approx(min(ramp, cosine))
    assert factor(80) == pytest.approx(0.0, abs=1e-12)
