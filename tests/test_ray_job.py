"""A real two-node Ray cluster on this machine, launched the way docs/cluster.md says, and a run
submitted to it with `ray job submit`: every command the doc shows is run here (the same flags,
other ports and paths).

- the head: `ray start --head` with the dashboard (the job server lives there) and the custom
  resource `learner_node`; a second raylet: `ray start --address=...` with `rollout_node` and its
  own ports (both raylets share one machine);
- `ray job submit -- swarmrl train experiments/cluster_two_nodes.yaml`, which pins the learner's
  bundle to `learner_node` (and the head) and the rollout workers' to `rollout_node`;
- where each role ran: the MLflow tags `swarmrl.worker_nodes` / `swarmrl.learner_nodes`
  (`mlflow runs describe`), the job's driver node (`ray job list`; the learner is in the driver
  with one rank), matched with `ray list nodes`;
- `ray stop`.

`ray stop` stops every Ray process it can see on the machine, and other tests run embedded Ray
instances at the same time: so the cluster lives in a PID namespace of its own (`unshare --pid`),
where `ray stop` sees only this cluster's processes. Killing the namespace's first process at the
end takes down whatever `ray stop` left (it leaves the dashboard's forkserver): nothing survives
the test. Without namespaces (no `unshare`, no permission) the test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "cluster_two_nodes.yaml"
BIN = Path(sys.executable).parent  # ray, swarmrl and mlflow of this environment

# pid 1 of the namespace: reaps the daemons `ray start` leaves behind
INIT = "import os, time\nwhile True:\n    try:\n        os.wait()\n    except ChildProcessError:\n        time.sleep(0.2)\n"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Namespace:
    """A PID (and mount, for its /proc) namespace; `start` runs a command inside it."""

    def __init__(self):
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        self.enter_user = [] if os.geteuid() == 0 else ["-U", "--preserve-credentials"]
        self.holder = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *user, sys.executable, "-c", INIT],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        self.init = None
        while self.init is None and time.monotonic() < deadline and self.holder.poll() is None:
            children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
            self.init = int(children[0]) if children else None
            time.sleep(0.05)
        if self.init is None:
            err = self.holder.communicate(timeout=5)[1].decode() if self.holder.poll() is not None else "no child"
            self.close()
            raise OSError(f"unshare --pid failed: {err.strip()}")
        self.pid_ns = os.readlink(f"/proc/{self.init}/ns/pid")

    def members(self) -> list[str]:
        """The command lines of the processes still in the namespace."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and os.readlink(proc / "ns" / "pid") == self.pid_ns:
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200])
            except OSError:  # gone, or not ours to read
                pass
        return found

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        cmd = ["nsenter", "-t", str(self.init), "-p", "-m", *self.enter_user, *args]
        # a process group of its own: nsenter's child (the command, in the namespace) is in it too
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def close(self) -> None:
        """SIGKILL to the namespace's pid 1 kills every process in it."""
        if self.init is not None:
            try:
                os.kill(self.init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(timeout=10)


@dataclass
class TwoNodes:
    ns: Namespace
    env: dict[str, str]
    dashboard: str  # http://127.0.0.1:PORT
    head: str  # node ids
    rollout_node: str
    log: list[str]

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.wait(self.ray_start(*args), timeout)

    def ray_start(self, *args: str) -> subprocess.Popen:
        """`ray ARGS` in the namespace, not waited for."""
        return self.ns.start([str(BIN / "ray"), *args], self.env)

    def wait(self, proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # nsenter and the command it started
            out, err = proc.communicate()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        self.log.append(f"$ {' '.join(proc.args)}\n[{done.returncode}]\n{out[-3000:]}\n{err[-3000:]}")
        return done


def check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def two_nodes():
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs unshare/nsenter (util-linux): the test's Ray runs in a PID namespace so that `ray stop` stops only it")
    try:
        ns = Namespace()
    except OSError as err:
        pytest.skip(f"needs a PID namespace so that `ray stop` stops only this test's Ray: {err}")
    temp = Path(f"/tmp/rj_{uuid.uuid4().hex[:8]}")  # Ray's socket paths are length-limited: keep it short
    try:
        temp.mkdir(mode=0o700)
        # token authentication, with a token of this cluster's own: every node and `ray job submit`
        # read it from RAY_AUTH_TOKEN_PATH (without RAY_AUTH_MODE, `ray start --head` turns tokens
        # on only when ~/.ray/auth_token exists, and `ray start --address` does not follow)
        token = temp / "auth_token"
        with token.open("w") as f:
            check(subprocess.run([sys.executable, "-c", "import secrets; print(secrets.token_hex(32))"], stdout=f, text=True, timeout=30), "token")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        gcs, dash, client, agent, nm, om, agent2, grpc2, metrics2, renv2 = free_ports(10)
        cluster = TwoNodes(ns, env, f"http://127.0.0.1:{dash}", "", "", [])
        # the head node: GCS, dashboard (job server), the learner's custom resource
        head = cluster.ray_start(
            "start", "--head", f"--port={gcs}", "--num-cpus=2", '--resources={"learner_node": 2}',
            "--include-dashboard=true", f"--dashboard-port={dash}", f"--temp-dir={temp}",
            # ports the defaults of another Ray on this machine could hold
            f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        )
        # the second raylet (the rollout workers' node) joins as soon as the GCS listens, while
        # the head is still starting its dashboard; its own ports, since it shares the machine
        deadline = time.monotonic() + 120
        while head.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", gcs)) == 0:
                    break
            time.sleep(0.2)
        second = cluster.ray_start(
            "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", '--resources={"rollout_node": 2}', f"--temp-dir={temp}",
            f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent2}",
            f"--dashboard-agent-grpc-port={grpc2}", f"--metrics-export-port={metrics2}", f"--runtime-env-agent-port={renv2}",
            "--min-worker-port=0", "--max-worker-port=0",  # workers take ports the OS picks
        )
        check(cluster.wait(head, 180), "ray start --head")
        check(cluster.wait(second, 180), "ray start --address")
        deadline = time.monotonic() + 60
        while True:
            done = cluster.ray("list", "nodes", "--address", cluster.dashboard, "--format", "yaml")
            nodes = [n for n in (yaml.safe_load(done.stdout) or []) if n["state"] == "ALIVE"] if done.returncode == 0 else []
            if len(nodes) == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(nodes) == 2, "\n".join(cluster.log)
        cluster.head = next(n["node_id"] for n in nodes if n["is_head_node"])
        cluster.rollout_node = next(n["node_id"] for n in nodes if "rollout_node" in n["resources_total"])
        assert cluster.rollout_node != cluster.head
        yield cluster
        check(cluster.ray("stop"), "ray stop")  # sees only this namespace's processes
    finally:
        ns.close()  # whatever `ray stop` left (or everything, after a failure)
        shutil.rmtree(temp, ignore_errors=True)
    deadline = time.monotonic() + 10
    while (left := ns.members()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes of the test cluster outlived it: {left}"


def submit(cluster: TwoNodes, runs: Path, run_dir: Path, *overrides: str) -> str:
    """`ray job submit` the experiment; the job's submission id once it succeeded."""
    done = cluster.ray(
        "job", "submit", "--address", cluster.dashboard, "--",
        "swarmrl", "train", str(EXPERIMENT), "--run-dir", str(run_dir), f"run.runs_dir={runs}", *overrides,
        timeout=400,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and re.search(r"Job '\S+' succeeded", out), out[-6000:]
    assert "2 rollout worker(s) ready on 1 node(s), placement spread" in out  # the driver's log, tailed by `ray job submit`
    return re.search(r"Job '(\S+)' submitted successfully", out).group(1)


def run_tags(cluster: TwoNodes, runs: Path, run_dir: Path) -> dict[str, str]:
    """The run's tags as `mlflow runs describe` prints them (the run id is in the run directory)."""
    env = {**cluster.env, "MLFLOW_TRACKING_URI": f"sqlite:///{runs}/mlflow.db"}
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    done = check(subprocess.run([str(BIN / "mlflow"), "runs", "describe", "--run-id", run_id], env=env, capture_output=True, text=True, timeout=120), "mlflow runs describe")
    run = json.loads(done.stdout[done.stdout.index("{"):])
    assert run["info"]["status"] == "FINISHED"
    return run["data"]["tags"]


def driver_node(cluster: TwoNodes, jobs: subprocess.Popen, submission_id: str) -> str:
    """The node the job's driver ran on, from `ray job list` (started as `jobs`)."""
    out = check(cluster.wait(jobs, 120), "ray job list").stdout
    job = next(j for j in re.findall(r"JobDetails\(.*?driver_exit_code=[^)]*\)", out) if f"submission_id='{submission_id}'" in j)
    return re.search(r"driver_node_id='(\w+)'", job).group(1)


def test_ray_job_submit_puts_two_learner_ranks_on_the_head_and_the_workers_on_the_other_node(two_nodes, tmp_path):
    """`cluster.learner_ranks: 2`: two learner actors (one FSDP2 process group, gloo on CPU), both
    pinned to the head by `learner_node` (the head has 2), the driver on the head (where `ray job
    submit` runs it), the workers on the other node."""
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "two_ranks"
    job = submit(two_nodes, runs, run_dir, "cluster.learner_ranks=2")
    jobs = two_nodes.ray_start("job", "list", "--address", two_nodes.dashboard)  # alongside `mlflow runs describe`
    tags = run_tags(two_nodes, runs, run_dir)
    assert tags["swarmrl.worker_nodes"].split(",") == [two_nodes.rollout_node] * 2
    assert tags["swarmrl.learner_nodes"].split(",") == [two_nodes.head] * 2
    assert driver_node(two_nodes, jobs, job) == two_nodes.head
