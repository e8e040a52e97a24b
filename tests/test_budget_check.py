from rich.console import Console

from regene_search.budget_check import estimated_hours, measured_images_per_second, warn_if_slow
from regene_search.config import TrialConfig, RunSpec
from regene_search.search.space import default_space_path


def _spec(budget: str, **kwargs) -> RunSpec:
    return RunSpec(dataset="cifar10", data_dir=None, budget=budget, name="x", results_root="/tmp", space_path=str(default_space_path("cifar10")), **kwargs)


def test_estimate_scales_with_trials_epochs_images_and_concurrency():
    spec = _spec("paper", trials=10)
    one = estimated_hours(spec, images_per_second=1000, concurrent=1)
    assert one == 10 * 60 * 45000 / 1000 / 3600
    assert estimated_hours(spec, images_per_second=1000, concurrent=2) == one / 2


def test_throughput_is_measured_from_real_steps():
    ips = measured_images_per_second(TrialConfig(blocks=1, base_width=8, latent_dim=16, batch_size=16), image_size=28, channels=1, steps=2)
    assert ips > 0


def test_paper_budget_on_cpu_warns_before_starting():
    console = Console(record=True, width=200)
    warn_if_slow(_spec("paper"), console)
    text = console.export_text()
    assert "No GPU found" in text and "hours" in text


def test_smoke_budget_does_not_warn():
    console = Console(record=True, width=200)
    warn_if_slow(_spec("smoke"), console)
    assert console.export_text() == ""
