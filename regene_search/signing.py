"""What `--resume` may unpickle: Ray Tune's state files, signed with a per-user key kept outside the run folder.

Tune restores a search by unpickling `tuner.pkl`, the searcher state and (cloudpickle inside JSON)
the experiment state, so a crafted file in a run folder would run code on resume. Each time Tune
saves its state, `SignTuneState` (a Tune callback, called in the middle of that save, before the
upload to storage starts) records an HMAC-SHA256 of every top-level file in Tune's staging folder
into `signatures.json` beside them in storage. Before a restore, `verify_folder` refuses, in one
line, any top-level file of the experiment folder whose HMAC under this user's key is not recorded
there. The last few versions of each file are kept: Tune uploads asynchronously, so storage may
hold a version older than the latest save.

A run killed while Tune uploads its state can leave a file cut short in storage (Tune's upload
writes in place). So each signed version is also written whole (`Location.write_bytes`) into
`.signed-copies/`; before verifying, `repair_from_signed_copies` puts that copy back over a
top-level file that does not verify, when the copy does. The resumed search then starts from
Tune's previous save, as after any interruption.

The key: `$REGENE_SEARCH_KEY_FILE`, else `$XDG_CONFIG_HOME/regene-search/signing.key` (default
`~/.config/...`), 32 random bytes made on first use, readable by its owner only. To resume on
another machine, copy it there or point the variable at it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ray import tune

from .errors import RunDirError, UserError
from .storage import Location

SIGNATURES = "signatures.json"
SIGNED_COPIES = ".signed-copies"  # a dot folder: Tune neither reads nor lists it
KEY_BYTES = 32
VERSIONS_KEPT = 8  # per file name; Tune's upload to storage may lag its saves by a few


def key_path() -> Path:
    if explicit := os.environ.get("REGENE_SEARCH_KEY_FILE"):
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "regene-search" / "signing.key"


def signing_key() -> bytes:
    """This user's key, made on first use (owner-only); refused if others can read or change it."""
    path = key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(draft, path)  # published whole or not at all; a run starting at the same moment keeps its own
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        raise UserError(f"signing key {path} is readable or writable by others; run: chmod 600 {path}")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) < 16:
        raise UserError(f"signing key {path} is not a hex key of at least 16 bytes; delete it to make a new one")
    return key


def digest(key: bytes, name: str, data: bytes) -> str:
    """The HMAC of a file's name and bytes: a file renamed to another of Tune's names does not verify."""
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def read_signatures(folder: Location) -> dict[str, list[str]]:
    """The recorded digests per file name; none when the file is missing or not ours."""
    try:
        record = json.loads((folder / SIGNATURES).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        return {}
    return {name: [d for d in digests if isinstance(d, str)] for name, digests in files.items() if isinstance(digests, list)}


def digests_of(key: bytes, files: dict[str, bytes]) -> dict[str, str]:
    return {name: digest(key, name, data) for name, data in files.items()}


def record(target: Location, digests: dict[str, str], known: dict[str, list[str]]) -> dict[str, list[str]]:
    """Add `digests` (file name -> its digest now) to `known` and write them all to `target`."""
    updated = {name: list(history) for name, history in known.items()}
    for name, value in digests.items():
        history = [d for d in updated.get(name, []) if d != value]
        updated[name] = (history + [value])[-VERSIONS_KEPT:]
    if updated != known:
        target.write_bytes(json.dumps({"version": 1, "files": updated}, indent=1, sort_keys=True).encode())
    return updated


def is_tune_state(name: str) -> bool:
    """A top-level file Tune may read on restore: not ours, not its storage marker, not a temp file."""
    return name != SIGNATURES and not name.startswith((".", "tmp-"))


def top_level_files(folder: Location) -> list[Location]:
    return [f for f in folder.files(recursive=False) if is_tune_state(f.name)]


def is_signed(key: bytes, signed: dict[str, list[str]], name: str, data: bytes) -> bool:
    return is_recorded(signed, name, digest(key, name, data))


def is_recorded(signed: dict[str, list[str]], name: str, value: str) -> bool:
    return value in signed.get(name, ())


def repair_from_signed_copies(folder: Location) -> list[str]:
    """Put the signed copy back over each top-level file that does not verify (cut short by a kill
    mid-upload) where that copy does verify; the names of the files put back."""
    key, signed = signing_key(), read_signatures(folder)
    repaired = []
    for file in top_level_files(folder):
        if is_signed(key, signed, file.name, file.read_bytes()):
            continue
        try:
            copy = (folder / SIGNED_COPIES / file.name).read_bytes()
        except FileNotFoundError:
            continue
        if is_signed(key, signed, file.name, copy):
            file.write_bytes(copy)
            repaired.append(file.name)
    return repaired


def verify_folder(folder: Location) -> None:
    """Refuse (RunDirError) any file Tune would read from `folder` that this user's key did not sign."""
    key = signing_key()
    signed = read_signatures(folder)
    for file in top_level_files(folder):
        if not is_signed(key, signed, file.name, file.read_bytes()):
            raise RunDirError(
                f"{file} is not signed by your key ({key_path()}): it was changed after regene-search wrote it, "
                "or written by someone else; --resume only loads Tune state it signed, see the README's security section"
            )


def sign_folder(folder: Location) -> None:
    """Sign every top-level file of `folder` as it is now (for files written outside Tune's saves: `tuner.pkl`)."""
    key = signing_key()
    record(folder / SIGNATURES, digests_of(key, {f.name: f.read_bytes() for f in top_level_files(folder)}), read_signatures(folder))


class SignTuneState(tune.Callback):
    """Signs Tune's experiment state each time Tune saves it (see the module docstring).

    Tune calls `get_state` of every callback right after writing the experiment and searcher
    state into its local staging folder and before uploading that folder to storage; the
    signatures and whole copies of the new versions go straight to storage, so whichever version
    the upload leaves there is signed, and a version the upload cut short can be put back.
    Returning None keeps Tune from pickling a callback state of its own.
    """

    def __init__(self, experiment: Location) -> None:
        self.experiment = experiment
        self._setup()

    def _setup(self) -> None:
        self.key: bytes | None = None  # read at the first save: this object is pickled into tuner.pkl, the key never is
        self.known: dict[str, list[str]] = {}
        self.staging: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.experiment = state["experiment"]
        self._setup()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.staging is None and trials:  # Tune tells callbacks its staging folder only through a trial
            self.staging = Path(trials[0].storage.experiment_driver_staging_path)
            # Tune saved its state once already, at its first step, before it had a trial to tell us
            # the folder by: sign that save now, or a run killed before the next one (10 s later, or
            # at the second trial checkpoint) could not resume.
            self.get_state()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.on_step_begin(iteration, trials)

    def get_state(self) -> None:
        if self.staging is None or not self.staging.is_dir():
            return None
        if self.key is None:
            self.key, self.known = signing_key(), read_signatures(self.experiment)
        files = {p.name: p.read_bytes() for p in sorted(self.staging.iterdir()) if p.is_file() and is_tune_state(p.name)}
        digests = digests_of(self.key, files)  # each file hashed once a save
        changed = {name: data for name, data in files.items() if not is_recorded(self.known, name, digests[name])}
        self.known = record(self.experiment / SIGNATURES, digests, self.known)
        for name, data in changed.items():  # after the signatures: a copy is only ever put back once it verifies
            (self.experiment / SIGNED_COPIES / name).write_bytes(data)
        return None
