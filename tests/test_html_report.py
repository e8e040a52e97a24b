"""report.html: one self-contained page of a run, rendered in real headless Chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from regene_search.html_report import parallel_coordinates, render, write_report
from regene_search.results import RunPaths

from .browser import check_page
from .conftest import CLI
from .run_folders import make_run


def figures_of(paths: RunPaths) -> list[str]:
    return [f.relative_to(paths.dir) for f in paths.dir.files() if f.name.endswith(".png") and f.relative_to(paths.dir).startswith("figures/")]


def test_the_page_inlines_every_figure_of_the_run_and_asks_the_network_for_nothing(tmp_path):
    paths = make_run(tmp_path, gen_accuracy=0.85)
    page = render(paths)
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) == len(figures_of(paths)) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    for name in figures_of(paths):  # each figure placed once, with its file name under it
        assert page.count(f"<code>{name}</code>") == 1, name
    assert "<h2>Other figures</h2>" in page and "something-new.png" in page.split("<h2>Other figures</h2>")[1]
    assert not re.search(r"(src|href)=['\"](https?:|//)", page)
    assert "<span class='fail'>0.850 ✗</span>" in page  # the paper's bar, marked


def test_report_writes_the_page_in_the_run_folder_or_where_asked_and_refuses_a_non_run(tmp_path):
    paths = make_run(tmp_path)
    proc = subprocess.run([*CLI, "report", str(paths.dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(paths.report_html).read_text().startswith("<!DOCTYPE html>") and "report.html" in proc.stdout
    elsewhere = tmp_path / "page.html"
    assert subprocess.run([*CLI, "report", str(paths.dir), "--out", str(elsewhere)], capture_output=True, timeout=120).returncode == 0
    assert "Promoted encoder a" in elsewhere.read_text()
    bad = subprocess.run([*CLI, "report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a regene-search run folder" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_run_still_searching_gets_a_page_of_what_it_has(tmp_path):
    paths = make_run(tmp_path, search_running=True)
    write_report(paths.dir)
    check = check_page(Path(paths.report_html))
    assert check.page_errors == [] and check.console_errors == [] and check.requests == []
    assert check.images == 1 and check.broken_images == []
    assert "the search has 1 trial(s) not finished" in check.text and "Promoted encoder" not in check.text


def test_chromium_loads_every_image_and_logs_no_error(tmp_path):
    paths = make_run(tmp_path, empty_class=2)
    write_report(paths.dir)
    check = check_page(Path(paths.report_html))
    assert check.images == 6 and check.broken_images == []
    assert check.console_errors == [] and check.page_errors == [] and check.requests == []
    assert "no generation of 2 - two passed the filter" in check.text
    assert check.screenshot.startswith(b"\x89PNG")


def test_parallel_coordinates_put_better_up_and_survive_constant_and_missing_values():
    rows = [
        {"trial_id": "good", "accuracy": 0.9, "decoder_mae": 0.05, "latent_sparsity": 0.1, "joint_score": 0.8, "on_front": True, "promoted": True},
        {"trial_id": "bad", "accuracy": 0.5, "decoder_mae": 0.20, "latent_sparsity": 0.1, "joint_score": 0.1, "on_front": False, "promoted": False},
        {"trial_id": "diverged", "accuracy": None, "decoder_mae": None, "latent_sparsity": None, "joint_score": None, "on_front": False, "promoted": False},
    ]
    svg = parallel_coordinates(rows)
    lines = {trial: points for points, trial in re.findall(r"points='([^']*)'><title>(\w+)</title>", svg)}
    assert set(lines) == {"good", "bad"}
    good = [float(pt.split(",")[1]) for pt in lines["good"].split()]
    bad = [float(pt.split(",")[1]) for pt in lines["bad"].split()]
    assert good[0] < bad[0] and good[1] < bad[1] and good[3] < bad[3]  # SVG y grows downward: better is higher
    assert good[2] == bad[2]  # a constant axis puts everyone in the middle
    assert parallel_coordinates(rows[2:]) == "<p>No trial with objectives yet.</p>"


def test_the_browser_check_catches_a_broken_image_a_script_error_and_a_network_request(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img alt='bad' src='data:image/png;base64,AAAA'>"
                    "<img alt='remote' src='http://127.0.0.1:9/x.png'><script>console.error('boom'); undefinedCall();</script></body></html>")
    check = check_page(page)
    assert check.images == 2 and sorted(check.broken_images) == ["bad", "remote"]
    assert any("boom" in e for e in check.console_errors) and any("undefinedCall" in e for e in check.page_errors)
    assert check.requests == ["http://127.0.0.1:9/x.png"]


def test_the_page_says_what_share_of_the_train_split_had_labels(tmp_path):
    from regene_search.results import read_json, write_json

    paths = make_run(tmp_path)
    assert "<td>labels</td><td>labels on 100% of the train split</td>" in render(paths)  # a run.json from before --labelled-fraction
    record = read_json(paths.run_json)
    write_json({**record, "spec": {**record["spec"], "labelled_fraction": 0.1}}, paths.run_json)
    assert "<td>labels</td><td>labels on 10% of the train split</td>" in render(paths)
