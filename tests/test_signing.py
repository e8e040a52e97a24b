"""Signing of Tune's state: the HMAC record, the key file, and a real run folder whose pickle was replaced."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess

import pytest

from regene_search import signing
from regene_search.errors import RunDirError, UserError
from regene_search.search.tuner import EXPERIMENT_NAME
from regene_search.storage import Location

from .conftest import CLI


@pytest.fixture
def own_key(tmp_path, monkeypatch):
    path = tmp_path / "config" / "signing.key"
    monkeypatch.setenv("REGENE_SEARCH_KEY_FILE", str(path))
    return path


def test_the_key_is_made_once_owner_only_and_refused_when_others_can_read_it(own_key):
    key = signing.signing_key()
    assert len(key) == signing.KEY_BYTES and own_key.stat().st_mode & 0o777 == 0o600
    assert signing.signing_key() == key
    own_key.chmod(0o644)
    with pytest.raises(UserError, match="readable or writable by others; run: chmod 600"):
        signing.signing_key()
    own_key.chmod(0o600)
    own_key.write_text("not hex")
    with pytest.raises(UserError, match="not a hex key"):
        signing.signing_key()


def test_xdg_config_home_is_the_default_place(tmp_path, monkeypatch):
    monkeypatch.delenv("REGENE_SEARCH_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert signing.key_path() == tmp_path / "regene-search" / "signing.key"


def test_signed_files_verify_and_any_change_is_refused(own_key, tmp_path):
    folder = Location.of(tmp_path / "search")
    (folder / "tuner.pkl").write_bytes(b"state 1")
    (folder / "searcher-state-x.pkl").write_bytes(b"searcher")
    (folder / ".validate_storage_marker").write_bytes(b"")
    signing.sign_folder(folder)
    signing.verify_folder(folder)

    (folder / "tuner.pkl").write_bytes(b"state 2")  # changed after signing
    with pytest.raises(RunDirError, match=r"tuner.pkl is not signed by your key"):
        signing.verify_folder(folder)
    signing.sign_folder(folder)  # a later save: both versions stay trusted (uploads may lag)
    (folder / "tuner.pkl").write_bytes(b"state 1")
    signing.verify_folder(folder)

    (folder / "experiment_state-y.json").write_bytes(b"{}")  # a file nobody signed
    with pytest.raises(RunDirError, match="experiment_state-y.json is not signed"):
        signing.verify_folder(folder)


def test_a_signed_file_renamed_or_checked_with_another_key_is_refused(own_key, tmp_path, monkeypatch):
    folder = Location.of(tmp_path / "search")
    (folder / "a.pkl").write_bytes(b"same bytes")
    signing.sign_folder(folder)
    (folder / "b.pkl").write_bytes(b"same bytes")
    with pytest.raises(RunDirError, match="b.pkl"):
        signing.verify_folder(folder)
    (folder / "b.pkl").delete()
    monkeypatch.setenv("REGENE_SEARCH_KEY_FILE", str(tmp_path / "someone-else.key"))
    with pytest.raises(RunDirError, match="a.pkl is not signed"):
        signing.verify_folder(folder)


def test_a_damaged_signature_file_trusts_nothing(own_key, tmp_path):
    folder = Location.of(tmp_path / "search")
    (folder / "tuner.pkl").write_bytes(b"x")
    signing.sign_folder(folder)
    for damage in (b"{not json", b"[1]", json.dumps({"files": {"tuner.pkl": "abc"}}).encode()):
        (folder / signing.SIGNATURES).write_bytes(damage)
        with pytest.raises(RunDirError, match="not signed"):
            signing.verify_folder(folder)


def test_a_state_file_cut_short_mid_upload_is_put_back_from_its_signed_copy(own_key, tmp_path):
    """Two of Tune's saves through the callback, then a kill that leaves the second upload cut short."""
    staging, experiment = tmp_path / "staging", Location.of(tmp_path / "search")
    staging.mkdir()
    callback = signing.SignTuneState(experiment)
    callback.staging = staging
    for save in (1, 2):
        (staging / "experiment_state-s.json").write_text(json.dumps({"save": save, "trials": list(range(50 * save))}))
        callback.get_state()
    whole = (staging / "experiment_state-s.json").read_bytes()
    (experiment / "experiment_state-s.json").write_bytes(whole[: len(whole) // 2])  # the upload, cut short
    with pytest.raises(RunDirError, match="experiment_state-s.json is not signed"):
        signing.verify_folder(experiment)

    assert signing.repair_from_signed_copies(experiment) == ["experiment_state-s.json"]
    assert (experiment / "experiment_state-s.json").read_bytes() == whole
    signing.verify_folder(experiment)
    assert signing.repair_from_signed_copies(experiment) == []  # nothing left to put back


def test_the_save_tune_makes_before_its_first_trial_is_signed_once_a_trial_names_the_folder(own_key, tmp_path):
    """Tune saves its state at its first step, before any trial exists to tell the callback its
    staging folder; a run killed before the next save must still resume (seen on idle cores)."""
    from types import SimpleNamespace

    staging, experiment = tmp_path / "staging", Location.of(tmp_path / "search")
    staging.mkdir()
    callback = signing.SignTuneState(experiment)
    callback.on_step_begin(0, [])  # step 1: no trial yet
    (staging / "experiment_state-s.json").write_text('{"trials": []}')  # ... then Tune saves and uploads
    callback.get_state()
    (experiment / "experiment_state-s.json").write_bytes((staging / "experiment_state-s.json").read_bytes())
    with pytest.raises(RunDirError, match="not signed"):
        signing.verify_folder(experiment)
    trial = SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))  # Tune's Trial, as the callback reads it
    callback.on_step_begin(1, [trial])
    signing.verify_folder(experiment)


def test_a_changed_signed_copy_is_never_put_back(own_key, tmp_path):
    experiment = Location.of(tmp_path / "search")
    (experiment / "searcher-state-x.pkl").write_bytes(b"searcher")
    signing.sign_folder(experiment)
    (experiment / signing.SIGNED_COPIES / "searcher-state-x.pkl").write_bytes(b"crafted")
    (experiment / "searcher-state-x.pkl").write_bytes(b"crafted")
    assert signing.repair_from_signed_copies(experiment) == []
    with pytest.raises(RunDirError, match="searcher-state-x.pkl is not signed"):
        signing.verify_folder(experiment)


def test_the_callback_never_pickles_the_key(own_key, tmp_path):
    callback = signing.SignTuneState(Location.of(tmp_path))
    callback.key = signing.signing_key()
    data = pickle.dumps(callback)
    assert callback.key not in data and callback.key.hex().encode() not in data
    assert pickle.loads(data).key is None


class _RunsCode:
    """What a crafted pickle does on load: run a command (here: leave a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_resume_refuses_a_run_folder_whose_pickle_was_replaced(smoke_search_run, tmp_path):
    """A real search's folder: Tune's state is signed as written; a replaced searcher pickle is put
    back from its signed copy, and refused before it is loaded when the copy was replaced too."""
    from regene_search.search.tuner import verify_restorable

    source = smoke_search_run.run_dir
    run_dir = tmp_path / "handed-to-you"
    shutil.copytree(source, run_dir)
    experiment = Location.of(run_dir / "tune" / EXPERIMENT_NAME)
    signed = signing.read_signatures(experiment)
    state_files = [f.name for f in signing.top_level_files(experiment)]
    assert "tuner.pkl" in state_files and any(n.startswith("searcher-state-") for n in state_files)
    assert set(state_files) <= set(signed)
    signing.verify_folder(experiment)  # the run as written: trusted

    stages = json.loads((run_dir / "stages.json").read_text())  # as if the search had been interrupted
    stages["search"] = {**stages["search"], "status": "interrupted"}
    (run_dir / "stages.json").write_text(json.dumps(stages))
    marker = tmp_path / "code-ran"
    searcher = next(n for n in state_files if n.startswith("searcher-state-"))
    crafted = pickle.dumps(_RunsCode(marker))
    original = (experiment / searcher).read_bytes()
    (experiment / searcher).write_bytes(crafted)
    assert verify_restorable(run_dir / "tune")
    assert (experiment / searcher).read_bytes() == original

    for target in (experiment / searcher, experiment / signing.SIGNED_COPIES / searcher):
        target.write_bytes(crafted)
    proc = subprocess.run([*CLI, "run", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{searcher} is not signed by your key" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the crafted pickle was loaded"


def test_a_real_search_keeps_whole_signed_copies_of_its_state(smoke_search_run, tmp_path):
    """Every state file of a real search has its signed copy, so a file cut short mid-upload resumes."""
    from regene_search.search.tuner import verify_restorable

    run_dir = tmp_path / "killed-mid-upload"
    shutil.copytree(smoke_search_run.run_dir, run_dir)
    experiment = Location.of(run_dir / "tune" / EXPERIMENT_NAME)
    state = next(f for f in signing.top_level_files(experiment) if f.name.startswith("experiment_state-"))
    whole = state.read_bytes()
    state.write_bytes(whole[:100])
    assert verify_restorable(run_dir / "tune")
    assert state.read_bytes() == whole


def test_runs_starting_at_once_agree_on_one_key(own_key):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: signing.signing_key(), range(16)))
    assert len(keys) == 1 and list(own_key.parent.iterdir()) == [own_key]
