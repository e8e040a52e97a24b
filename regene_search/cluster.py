"""Connecting to Ray: an embedded local instance by default, or an existing cluster by address."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import ray

from .errors import UserError

CONNECT_TIMEOUT_S = 10


def token_file() -> Path:
    """Where Ray reads the auth token from: RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


@dataclass(frozen=True)
class ClusterInfo:
    dashboard_url: str | None
    cpus: float
    gpus: float
    nodes: int
    auth_mode: str


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(address: str | None, *, dashboard_host: str = "127.0.0.1", temp_dir: str | None = None) -> ClusterInfo:
    """Start (address None) or join (`auto` or HOST:PORT) a Ray cluster; the dashboard stays on loopback by default."""
    kwargs: dict = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
    if address is None:
        kwargs.update(include_dashboard=True, dashboard_host=dashboard_host)
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
    if address is not None:
        check_reachable(address)
    try:
        context = ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    resources = ray.cluster_resources()
    url = context.dashboard_url or None
    return ClusterInfo(
        dashboard_url=f"http://{url}" if url and not url.startswith("http") else url,
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        nodes=sum(1 for node in ray.nodes() if node.get("Alive")),
        auth_mode=os.environ.get("RAY_AUTH_MODE", "token"),
    )


def check_reachable(address: str) -> None:
    """Ask a HOST:PORT once, briefly: with nothing listening `ray.init` retries for minutes and ignores SIGTERM."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto" (Ray finds the local cluster or fails at once), ray:// client addresses
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head` or check --address"
        ) from None


def check_resources(cluster: ClusterInfo, *, cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse trial resources the cluster can never grant (Tune would otherwise wait forever)."""
    if gpus_per_trial > cluster.gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g} exceeds the cluster's {cluster.gpus:g} GPU(s)")
    if cpus_per_trial > cluster.cpus:
        raise UserError(f"--cpus-per-trial {cpus_per_trial:g} exceeds the cluster's {cluster.cpus:g} CPU(s)")


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()
