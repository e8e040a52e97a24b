"""RUN/run.log: time-stamped plain lines from the run's console, on local disk and on an s3:// run folder."""

from __future__ import annotations

import io
import re

from rich.console import Console

from regene_search import runlog
from regene_search.storage import Location

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  "


def test_the_console_prints_to_the_user_and_stamps_plain_lines_into_the_log(tmp_path):
    shown = io.StringIO()
    user = Console(file=shown, force_terminal=True, color_system="truecolor", width=60)
    with runlog.open_run_log(Location.of(tmp_path), user) as console:
        assert runlog.current() is not None
        console.print("[bold red]stage search[/bold red] started")
        console.print("a line much longer than sixty columns " * 3)
        runlog.current().write("half a ")
        runlog.current().write("line\n")
    assert runlog.current() is None
    assert "\x1b[" in shown.getvalue(), "the user's terminal keeps its colours"
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert re.fullmatch(STAMP + "stage search started", lines[0])
    assert all(re.match(STAMP, line) for line in lines) and "\x1b" not in "".join(lines)
    assert lines[-1].endswith("  half a line")


def test_off_a_terminal_lines_are_not_wrapped(tmp_path):
    shown = io.StringIO()
    with runlog.open_run_log(Location.of(tmp_path), Console(file=shown, width=40)) as console:
        console.print("word " * 30)
    assert shown.getvalue().count("\n") == 1
    assert (tmp_path / "run.log").read_text().count("\n") == 1


def test_a_resumed_run_appends_to_its_log(tmp_path):
    for word in ("first", "second"):
        with runlog.open_run_log(Location.of(tmp_path), Console(file=io.StringIO())) as console:
            console.print(word)
    assert [line.split("  ", 1)[1] for line in (tmp_path / "run.log").read_text().splitlines()] == ["first", "second"]


def test_a_remote_run_folder_gets_the_whole_log_and_a_resume_continues_it(s3_root, tmp_path, monkeypatch):
    monkeypatch.setenv("REGENE_SEARCH_CACHE", str(tmp_path / "cache"))
    run_dir = Location.of(f"{s3_root}/runlog/r1")
    with runlog.open_run_log(run_dir, Console(file=io.StringIO())) as console:
        console.print("on s3")
        runlog.current().sync()
        assert (run_dir / "run.log").read_bytes().decode().endswith("on s3\n")
    monkeypatch.setenv("REGENE_SEARCH_CACHE", str(tmp_path / "another-machine"))
    with runlog.open_run_log(run_dir, Console(file=io.StringIO())) as console:
        console.print("resumed")
    text = (run_dir / "run.log").read_bytes().decode()
    assert [line.split("  ", 1)[1] for line in text.splitlines()] == ["on s3", "resumed"]
