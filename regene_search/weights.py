"""Loading weight files a user hands in: tensors only (`weights_only=True`), one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def load_state_dict_file(path: Path | str, what: str) -> dict[str, Any]:
    """The state dict in `path`; a missing, corrupt or non-dict file is a `UserError` naming `what`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{what} file {path} is not a loadable state dict ({reason})") from None
    if not isinstance(state, dict):
        raise UserError(f"{what} file {path} holds a {type(state).__name__}, not a state dict")
    return state
