"""A real multi-node Ray cluster on loopback for the tests (docs: environment.md, "Ray").

    with LoopbackCluster(worker_nodes=1) as cluster:
        subprocess.run([..., "--address", cluster.address])

What the machines need, and how this helper does it:

* Ray rewrites ``127.0.0.1`` to the outward address, so the head runs on ``127.0.0.2``
  and worker nodes on ``127.0.0.3``, ``127.0.0.4``, ...
* Ray probes cloud metadata addresses at start unless ``$HOME/ray_bootstrap_config.yaml``
  exists, and a driver's ``$HOME/.ray/auth_token`` from an earlier cluster is refused by a
  later one: every cluster gets a fresh HOME holding that file (``provider: {type: local}``).
* Several clusters (other test sessions) may share the machine: every port is picked free
  by the OS, every node has its own short ``--temp-dir`` (unix socket paths are limited to
  107 bytes), and each node runs as ``ray start --block`` so it can be stopped **by its own
  process id**. (``ray stop --force`` is never used: it kills every Ray process of the
  machine by name, other sessions' clusters included.) Stragglers are found by a marker
  environment variable that only this cluster's processes inherit, and killed by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["LoopbackCluster", "ray_env", "make_ray_home", "processes_with_marker", "process_title", "HEAD_IP",
           "on_actor", "actor_info"]

HEAD_IP = "127.0.0.2"
# Marker variable inherited by every process of one cluster (raylet, workers, actors).
MARKER_VAR = "VIDPRUNE_TEST_CLUSTER"
# Small object store per node: the tests move a few MB; several clusters may share 24 GiB.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
# Worker processes one node may start (actors, their restarts, task workers).
WORKER_PORTS_PER_NODE = 48
# Seconds to wait for a node to register / for processes to exit.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
# A dead node is declared dead after 3 missed 1 s health checks (Ray's default: 5 x 3 s),
# so tests that kill a node do not wait long for its actors to restart elsewhere.
FAST_NODE_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
# What `ray start` prints once its node is registered with the cluster.
STARTED_BANNER = "Ray runtime started."
START_ATTEMPTS = 3
_RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(ip: str, count: int) -> list[int]:
    """``count`` distinct TCP ports the OS says are free on ``ip`` right now."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ip, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def ray_env(home: str | os.PathLike, marker: str | None = None) -> dict[str, str]:
    """Environment for a Ray process on loopback: fresh HOME (bootstrap file in it), no usage stats."""
    env = dict(os.environ)
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RAY_ADDRESS", None)
    if marker:
        env[MARKER_VAR] = marker
    return env


def make_ray_home(parent: str | os.PathLike | None = None) -> Path:
    """A fresh HOME holding ``ray_bootstrap_config.yaml`` (stops the cloud metadata probes)."""
    home = Path(tempfile.mkdtemp(prefix="vprh", dir=parent))
    (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    return home


def processes_with_marker(marker: str) -> list[int]:
    """Pids of the processes whose environment carries ``MARKER_VAR=marker`` (Linux /proc)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def process_title(pid: int) -> str:
    """The command line of ``pid`` as shown by ps (Ray workers set it to ``ray::Class.method``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class LoopbackCluster:
    """A head on 127.0.0.2 plus ``worker_nodes`` nodes on 127.0.0.3, ... each with ``num_cpus`` logical CPUs.

    ``worker_gpus``: GPUs each worker node declares (``ray start --num-gpus``; a CPU machine
    declares them as logical resources: Ray schedules and sets ``CUDA_VISIBLE_DEVICES`` for
    them, nothing runs on a GPU). The head declares none.
    """

    def __init__(self, worker_nodes: int = 1, num_cpus: int = 4, worker_gpus: int = 0, dashboard: bool = False):
        self.marker = uuid.uuid4().hex
        self.home = make_ray_home()
        self.num_cpus = num_cpus
        self._nodes: list[tuple[str, subprocess.Popen, Path]] = []  # (ip, `ray start --block`, temp dir)
        self.address = ""
        self._worker_nodes = worker_nodes
        self.worker_gpus = worker_gpus
        self.dashboard = dashboard
        self.dashboard_url = ""  # http://127.0.0.2:PORT with dashboard=True: the job server (`ray job submit`)

    # ------------------------------------------------------------------ start
    def __enter__(self) -> LoopbackCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Environment for drivers of this cluster (same HOME, marker set)."""
        return ray_env(self.home, self.marker)

    def start(self) -> None:
        (gcs_port,) = _free_ports(HEAD_IP, 1)
        self.address = f"{HEAD_IP}:{gcs_port}"
        head_args = ["--head", f"--port={gcs_port}", "--disable-usage-stats",
                     "--system-config=" + json.dumps(FAST_NODE_FAILURE_DETECTION)]
        if self.dashboard:  # needs ray[default]; the job server is part of the dashboard
            (dashboard_port,) = _free_ports(HEAD_IP, 1)
            self.dashboard_url = f"http://{HEAD_IP}:{dashboard_port}"
            head_args += ["--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dashboard_port}"]
        else:
            head_args.append("--include-dashboard=false")
        self._start_with_retries(HEAD_IP, head_args, num_gpus=0)
        for _ in range(self._worker_nodes):
            self.add_node()

    def add_node(self) -> str:
        """Start one more worker node on the next loopback address and wait for it; returns its IP."""
        ip = f"127.0.0.{2 + len(self._nodes)}"
        self._start_with_retries(ip, [f"--address={self.address}"], num_gpus=self.worker_gpus)
        return ip

    def _start_with_retries(self, ip: str, role_args: list[str], num_gpus: int = 0) -> None:
        """Start a node; on a busy machine Ray's fixed 30 s raylet start-up wait can expire, so try again."""
        for attempt in range(START_ATTEMPTS):
            self._start_node(ip, role_args, num_gpus)
            try:
                self.wait_for_node()
                return
            except _NodeExited as exc:
                _ip, _proc, temp_dir = self._nodes.pop()
                self._sweep(temp_dir)
                shutil.rmtree(temp_dir, ignore_errors=True)
                if attempt == START_ATTEMPTS - 1:
                    raise RuntimeError(str(exc)) from None

    def _start_node(self, ip: str, role_args: list[str], num_gpus: int = 0) -> None:
        ports = _free_ports(ip, 6 + WORKER_PORTS_PER_NODE)
        node_manager, object_manager, agent_listen, agent_grpc, runtime_env, metrics = ports[:6]
        temp_dir = Path(tempfile.mkdtemp(prefix="vprt"))
        cmd = [
            _RAY, "start", *role_args, f"--node-ip-address={ip}", f"--num-cpus={self.num_cpus}", f"--num-gpus={num_gpus}",
            f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={temp_dir}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            f"--dashboard-agent-listen-port={agent_listen}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
            "--worker-port-list=" + ",".join(map(str, ports[6:])), "--block",
        ]
        log = open(temp_dir / "ray-start.log", "wb")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self._nodes.append((ip, proc, temp_dir))

    def wait_for_node(self) -> None:
        """Block until the last started node is up: ``ray start`` prints its banner once the node joined the GCS."""
        ip, proc, temp_dir = self._nodes[-1]
        log = temp_dir / "ray-start.log"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise _NodeExited(f"ray node {ip} exited: {log.read_text()[-2000:]}")
            if STARTED_BANNER in log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"ray node {ip} did not come up within {START_TIMEOUT_S:.0f} s: {log.read_text()[-2000:]}")

    # ------------------------------------------------------------------ stop
    def kill_node(self, ip: str) -> None:
        """SIGKILL a worker node: its ``ray start`` process group, then whatever of it is left (by pid)."""
        for node_ip, proc, temp_dir in self._nodes:
            if node_ip == ip and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_S)
                self._sweep(temp_dir)  # raylet, agents: their command lines name the node's temp dir

    def _sweep(self, temp_dir: Path) -> None:
        for pid in processes_with_marker(self.marker):
            if str(temp_dir) in process_title(pid):
                _kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node of this cluster by pid (workers first, head last), then sweep leftovers."""
        for _ip, proc, _ in reversed(self._nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _ip, proc, _ in reversed(self._nodes):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc.pid, signal.SIGKILL)
        while time.monotonic() < deadline and processes_with_marker(self.marker):
            time.sleep(0.2)
        for pid in processes_with_marker(self.marker):
            _kill(pid, signal.SIGKILL)
        for _ip, _proc, temp_dir in self._nodes:
            shutil.rmtree(temp_dir, ignore_errors=True)
        self._nodes.clear()
        shutil.rmtree(self.home, ignore_errors=True)


class _NodeExited(RuntimeError):
    pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ inside an actor (test instrumentation)
def on_actor(actor, fn, *args):
    """Run ``fn(actor_instance, *args)`` inside a live actor and return its result (Ray's ``__ray_call__``).

    How the tests look into the pipeline's actors without hooks in production code: ``fn``
    must be defined inside a test function (cloudpickle sends such a function by value; a
    module-level one of this test folder would not import on the workers).
    """
    import ray

    return ray.get(actor.__ray_call__.remote(fn, *args))


def actor_info(actor) -> dict:
    """Where an actor runs and what Ray gave it: pid, node, CUDA_VISIBLE_DEVICES, GPU ids, resources, memory."""

    def describe(_instance):
        import os as _os

        import ray as _ray

        ctx = _ray.get_runtime_context()
        rss_kib = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        return {"pid": _os.getpid(), "node_id": ctx.get_node_id(),
                "cuda_visible_devices": _os.environ.get("CUDA_VISIBLE_DEVICES"),
                "gpu_ids": [str(g) for g in _ray.get_gpu_ids()], "resources": ctx.get_assigned_resources(),
                "rss_bytes": rss_kib * 1024}

    return on_actor(actor, describe)

