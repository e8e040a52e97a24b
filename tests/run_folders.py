"""Run folders of real files (run.json, stages.json, Parquet through the project's writers, PNG figures)
in a chosen state, for the readers of a run: `show`, its JSON and report.html."""

from __future__ import annotations

import io

import pyarrow as pa
from PIL import Image

from regene_search.results import PARETO_COLUMNS, TRIAL_COLUMNS, RunPaths, table_from_rows, write_bytes, write_json, write_parquet
from regene_search.stages.evaluate import EVALUATION_COLUMNS

from .conftest import new_run_folder

CLASSES = {0: "0 - zero", 1: "1 - one", 2: "2 - two"}
NS = (2, 3)
SPEC = {"dataset": "mnist", "budget": "smoke", "sampler": "tpe", "scheduler": "fifo", "promote": "knee", "stages": ["search", "decoder", "generate", "evaluate"]}
TRIALS = {  # trial -> (accuracy, decoder_mae, latent_sparsity): "b" is dominated by "a"
    "a": (0.95, 0.05, 0.10),
    "b": (0.90, 0.07, 0.20),
    "c": (0.97, 0.09, 0.05),
}


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 60, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_run(tmp_path, *, search_running: bool = False, judge: float = 0.97, gen_accuracy: float = 0.95, empty_class: int | None = None,
             novelty: tuple[float, float] = (5.0, 4.0), failed_stage: str | None = None, name: str = "glance") -> RunPaths:
    """A run whose search found TRIALS and promoted "a"; the later stages done unless the search is running or a stage failed."""
    paths = new_run_folder(tmp_path / "results", "mnist", name)
    write_json({"spec": SPEC, "seed": 0, "created": "2026-11-30T10:00:00+0000", "budget": {"trials": 3, "max_epochs": 2},
                "versions": {"regene_search": "0.1.0", "torch": "2.14.1"}, "git_commit": "0123456789abcdef"}, paths.run_json)
    trials = [{"trial_id": t, "status": "RUNNING" if search_running and t == "c" else "COMPLETED", "accuracy": acc, "decoder_mae": mae,
               "latent_sparsity": sp, "joint_score": acc - 2 * mae - 0.25 * sp, "epochs": 2, "seconds": 10.0, "param_blocks": 3,
               "param_convs_per_block": 1, "param_base_width": 16, "param_latent_dim": 64, "param_latent_activation": "relu", "param_lr": 1e-3}
              for t, (acc, mae, sp) in TRIALS.items()]
    write_parquet(table_from_rows(trials, TRIAL_COLUMNS), paths.trials)
    pareto = [{"trial_id": t, "accuracy": acc, "decoder_mae": mae, "latent_sparsity": sp, "joint_score": acc - 2 * mae - 0.25 * sp, "rank": int(t == "b"),
               "crowding": float("inf"), "on_front": t != "b", "promoted": t == "a" and not search_running, "promotion_score": None,
               "promotion_order": 1 if t == "a" and not search_running else None} for t, (acc, mae, sp) in TRIALS.items()]
    write_parquet(table_from_rows(pareto, PARETO_COLUMNS), paths.pareto)
    search = {"completed": 3, "trials": 3, "front_size": 2, "hypervolume": 0.8, "promoted": ["a"]}
    stages = {"search": {"status": "running", "started": 0.0} if search_running else {"status": "done", "seconds": 60.0, "summary": search}}
    write_bytes(png(), paths.dir / "figures" / "probe-mae.png")
    if search_running:
        write_json(stages, paths.stages_json)
        return paths
    if failed_stage == "decoder":
        stages["decoder"] = {"status": "failed", "seconds": 3.0, "reason": "RunDirError: checkpoints/classifier-a.pt is missing"}
        write_json(stages, paths.stages_json)
        return paths
    stages["decoder"] = {"status": "done", "seconds": 30.0, "summary": {"epochs": 4, "decoders": {"a": {"val_mae": 0.04, "val_ssim": 0.8}}}}
    stages["generate"] = {"status": "done", "seconds": 5.0, "summary": {"trials": {"a": {"accepted": 100, "generated": 120, "accept_rate": 100 / 120}}}}
    stages["evaluate"] = {"status": "done", "seconds": 20.0, "summary": {"neutral": {"test_accuracy": judge, "depth": 8},
                                                                       "trials": {"a": {"neutral_acc_gen": gen_accuracy}},
                                                                       "proxy": {"reason": "not computed: 1 encoder(s) promoted"}}}
    write_json(stages, paths.stages_json)
    rows = [{"dataset": "mnist", "trial_id": None, "metric": "neutral_test_accuracy", "value": judge},
            {"dataset": "mnist", "trial_id": "a", "metric": "neutral_acc_gen", "value": gen_accuracy},
            {"dataset": "mnist", "trial_id": "a", "metric": "accept_rate", "value": 100 / 120},
            {"dataset": "mnist", "trial_id": "a", "metric": "novelty_nn_l2_mean", "value": novelty[0]},
            {"dataset": "mnist", "trial_id": "a", "metric": "novelty_test_nn_l2_mean", "value": novelty[1]},
            {"dataset": "mnist", "trial_id": "a", "metric": "recon_mae", "value": 0.04}]
    for n in NS:
        rows.append({"dataset": "mnist", "trial_id": "a", "n": n, "metric": "neutral_acc_gen", "value": gen_accuracy + (0.01 if n == 3 else -0.01)})
        rows.append({"dataset": "mnist", "trial_id": "a", "n": n, "metric": "accepted_count", "value": 50.0})
        for cls in CLASSES:
            rate = 0.0 if cls == empty_class else 0.5 + 0.2 * cls
            rows.append({"dataset": "mnist", "trial_id": "a", "n": n, "class": cls, "metric": "accept_rate", "value": rate})
    for cls in CLASSES:
        if cls != empty_class:
            rows.append({"dataset": "mnist", "trial_id": "a", "class": cls, "metric": "neutral_acc_gen", "value": 1.0 - 0.1 * cls})
    write_parquet(table_from_rows(rows, EVALUATION_COLUMNS), paths.evaluation)
    generations = [{"trial_id": "a", "class": cls, "class_name": name, "n": 2, "accepted": True} for cls, name in CLASSES.items()]
    write_parquet(pa.Table.from_pylist(generations), paths.generations)
    for figure in ("figures/front.png", "figures/a/generations-n2.png", "figures/a/generations-n3.png", "figures/a/novelty.png", "figures/a/something-new.png"):
        write_bytes(png(), paths.dir / figure)
    return paths
