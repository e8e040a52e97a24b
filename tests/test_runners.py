"""The cluster recipes in runners/: they parse, say what they must, and the local ones really run."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .raycleanup import pids_using, stop_ray_processes

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ROOT / "runners"
LOCAL_CLUSTER = RUNNERS / "local-cluster.sh"
SBATCH = RUNNERS / "slurm.sbatch"
VENV_BIN = Path(sys.executable).parent

try:
    import yaml
except ImportError:  # pragma: no cover - pyyaml ships with ray[default]
    yaml = None


# ---- static checks -------------------------------------------------------------------


@pytest.mark.parametrize("script", [LOCAL_CLUSTER, SBATCH], ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    assert script.is_file()
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text


def test_local_cluster_is_executable_and_documents_itself():
    assert os.access(LOCAL_CLUSTER, os.X_OK)
    proc = subprocess.run([str(LOCAL_CLUSTER), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("start [N]", "stop", "status", "REGENE_CLUSTER_DIR", "RAY_AUTH_MODE"):
        assert word in proc.stdout
    text = LOCAL_CLUSTER.read_text()
    assert "--dashboard-host=127.0.0.1" in text
    assert "pkill" not in text and "killall" not in text


def test_local_cluster_refuses_bad_input(tmp_path):
    env = {**os.environ, "REGENE_CLUSTER_DIR": str(tmp_path)}
    usage = subprocess.run([str(LOCAL_CLUSTER), "frobnicate"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    bad_n = subprocess.run([str(LOCAL_CLUSTER), "start", "many"], capture_output=True, text=True, env=env)
    assert bad_n.returncode == 1 and "number of workers" in bad_n.stderr
    nothing = subprocess.run([str(LOCAL_CLUSTER), "stop"], capture_output=True, text=True, env=env)
    assert nothing.returncode == 1 and "no local cluster recorded" in nothing.stderr


def test_local_cluster_stop_targets_only_its_own_temp_dir():
    """`stop` sweeps processes naming its temp dir, and spares one naming a look-alike path."""
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    state = Path(temp_dir, "state")
    state.mkdir(mode=0o700)
    (state / "cluster.env").write_text("ADDRESS=127.0.0.2:1\nAUTH_MODE=token\nTOKEN_PATH=\n")
    (state / "pids").write_text("head 1\n")  # a recorded PID that is not ours: never signalled
    sleeper = "import time; time.sleep(120)"
    ours = subprocess.Popen([sys.executable, "-c", sleeper, f"--log_dir={temp_dir}/session_x/logs"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, f"--temp-dir={temp_dir}x"])
    try:
        env = {**os.environ, "REGENE_CLUSTER_DIR": temp_dir + "/"}
        stop = subprocess.run([str(LOCAL_CLUSTER), "stop"], capture_output=True, text=True, env=env, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert ours.wait(timeout=15) is not None
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _top_level_keys(path: Path) -> set[str]:
    """Without pyyaml: the unindented `key:` lines."""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_][\w-]*):", path.read_text(), re.MULTILINE)}


def test_ray_up_config():
    path = RUNNERS / "cluster.yaml"
    if yaml is None:
        keys = _top_level_keys(path)
        assert {"cluster_name", "provider", "head_node_type", "available_node_types", "setup_commands"} <= keys
        return
    (config,) = _yaml_documents(path)
    assert {"cluster_name", "provider", "head_node_type", "available_node_types", "setup_commands"} <= set(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in cmd and "regene-search" in cmd for cmd in config["setup_commands"])
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in starts
    # Ray's own schema check, as `ray up` does it (defaults filled in, no cloud calls).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))
    text = path.read_text()
    assert "regene-search run cifar10 --address auto --gpus-per-trial 0.5" in text and "--results /shared/results" in text
    assert "ray up" in text and "ray exec" in text


def test_kuberay_rayjob_manifest():
    path = RUNNERS / "kuberay-rayjob.yaml"
    if yaml is None:
        text = path.read_text()
        assert "apiVersion: ray.io/v1" in text and "kind: RayJob" in text
        assert "entrypoint:" in text and "rayClusterSpec:" in text
        return
    docs = _yaml_documents(path)
    (job,) = [d for d in docs if d.get("kind") == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("regene-search run cifar10 --address auto")
    assert "--results /shared/results" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    (gpu_group,) = cluster["workerGroupSpecs"]
    (worker,) = gpu_group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] >= 1
    (pvc,) = [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for group in [head, gpu_group]:
        volumes = group["template"]["spec"]["volumes"]
        assert {"name": "shared", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}} in volumes
    kinds = {d["kind"] for d in docs}
    assert "Service" not in kinds and "Ingress" not in kinds
    assert "NetworkPolicy" in kinds


def test_sbatch_script():
    text = SBATCH.read_text()
    headers = re.findall(r"^#SBATCH (--[\w-]+)", text, re.MULTILINE)
    assert {"--nodes", "--ntasks-per-node", "--time"} <= set(headers)
    assert "scontrol show hostnames" in text
    assert re.search(r"srun --nodes=1 --ntasks=1 -w \"\$head_node\" \\\n\s+ray start --head --block", text)
    assert re.search(r'regene-search run "\$DATASET" --address "\$address"', text)
    assert "--dashboard-host=127.0.0.1" in text
    assert "RAY_AUTH_TOKEN_PATH" in text and "RAY_AUTH_MODE" in text


def test_readme_covers_every_recipe():
    text = (RUNNERS / "README.md").read_text()
    for name in ("local-cluster.sh", "cluster.yaml", "slurm.sbatch", "kuberay-rayjob.yaml"):
        assert name in text
    for word in ("RAY_AUTH_TOKEN_PATH", "127.0.0.1", "ClusterIP", "--results"):
        assert word in text


# ---- real runs on loopback -----------------------------------------------------------


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(start: int) -> int:
    for port in range(start + os.getpid() % 50, start + 400):
        if not _listening("127.0.0.2", port) and not _listening("127.0.0.1", port):
            return port
    raise RuntimeError(f"no free port from {start}")


def _clean_env(temp_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=os.path.join(temp_dir, "token"),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_cluster_start_status_stop():
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    port = free_port(6390)
    env = _clean_env(temp_dir)
    env.update(
        REGENE_CLUSTER_DIR=temp_dir,
        REGENE_CLUSTER_PORT=str(port),
        REGENE_CLUSTER_DASHBOARD_PORT=str(free_port(8390)),
        REGENE_CLUSTER_CPUS="1",
        REGENE_CLUSTER_TIMEOUT="240",
        RAY=str(VENV_BIN / "ray"),
    )
    address = f"127.0.0.2:{port}"
    stop = None
    try:
        start = subprocess.run([str(LOCAL_CLUSTER), "start", "1"], capture_output=True, text=True, env=env, timeout=400)
        assert start.returncode == 0, start.stderr + start.stdout
        assert f"--address {address}" in start.stdout
        assert os.stat(env["RAY_AUTH_TOKEN_PATH"]).st_mode & 0o077 == 0

        status = subprocess.run([str(LOCAL_CLUSTER), "status"], capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0, status.stderr + status.stdout
        assert address in status.stdout and "worker1" in status.stdout

        probe = (
            "import ray, sys\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "print(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))\n"
        )
        nodes = subprocess.run(
            [sys.executable, "-c", probe, address], capture_output=True, text=True, env=env, timeout=180
        )
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.strip().splitlines()[-1] == "['127.0.0.2', '127.0.0.3']"

        # Token auth is really on: a wrong token is refused.
        wrong = {**env, "RAY_AUTH_TOKEN": "0" * 64}
        refused = subprocess.run(
            [str(VENV_BIN / "ray"), "status", "--address", address], capture_output=True, text=True, env=wrong, timeout=120
        )
        assert refused.returncode != 0
    finally:
        stop = subprocess.run([str(LOCAL_CLUSTER), "stop"], capture_output=True, text=True, env=env, timeout=180)
        leftovers = pids_using(temp_dir)
        stop_ray_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert stop.returncode == 0, stop.stderr + stop.stdout
    assert leftovers == []


FAKE_SCONTROL = """#!/bin/bash
# scontrol show hostnames LIST -> the fake nodes, one a line
[[ "$1 $2" == "show hostnames" ]] || exit 2
printf '%s\\n' $FAKE_SLURM_NODES
"""

FAKE_SRUN = """#!/bin/bash
# srun [--opt=value | -w NODE ...] COMMAND...: run COMMAND here; `hostname` answers the node's loopback IP
node=""
while (($#)); do
    case "$1" in
        -w) node=$2; shift 2 ;;
        --*) shift ;;
        *) break ;;
    esac
done
if [[ "$1" == hostname ]]; then
    for pair in $FAKE_SLURM_IPS; do
        [[ "${pair%%=*}" == "$node" ]] && { echo "${pair#*=}"; exit 0; }
    done
    exit 1
fi
exec "$@"
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sbatch_script_runs_a_search_on_fake_slurm(tmp_path):
    """The sbatch script end to end, with `srun`/`scontrol` stand-ins that run each 'node' on loopback."""
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    port = free_port(6390)
    env = _clean_env(temp_dir)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        FAKE_SLURM_NODES="n0 n1",
        FAKE_SLURM_IPS="n0=127.0.0.2 n1=127.0.0.3",
        SLURM_JOB_NODELIST="n[0-1]",
        SLURM_JOB_ID="4242",
        SLURM_CPUS_PER_TASK="1",
        SLURM_SUBMIT_DIR=str(ROOT),
        VENV=str(VENV_BIN.parent),
        SHARED=str(tmp_path),
        RESULTS=str(tmp_path / "results"),
        DATA_DIR=str(tmp_path / "data"),
        RUN_NAME="fake-slurm",
        BUDGET="smoke",
        GPUS_PER_TRIAL="0",
        CPUS_PER_TRIAL="1",
        RAY_PORT=str(port),
        RAY_DASHBOARD_PORT=str(free_port(8390)),
        RAY_TEMP_DIR=temp_dir,
        RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"),
        STARTUP_TIMEOUT="240",
    )
    try:
        proc = subprocess.run(
            ["bash", str(SBATCH), "shapes", "--stages", "search", "--trials", "2"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=840,
        )
        leftovers = pids_using(temp_dir)
    finally:
        stop_ray_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ray worker on n1 (127.0.0.3)" in proc.stdout
    assert "ray: 2 node(s)" in proc.stdout
    run_dir = tmp_path / "results" / "shapes" / "fake-slurm"
    assert (run_dir / "trials.parquet").is_file()
    assert os.stat(env["RAY_AUTH_TOKEN_PATH"]).st_mode & 0o077 == 0
    assert leftovers == [], "the script's EXIT trap should stop every Ray node it started"
