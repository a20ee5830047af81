"""Cluster launch: the fit check (pure), and a real multi-node Ray cluster simulated on this machine
(`ray.cluster_utils.Cluster`: a head and two worker nodes, separate raylets): a short training run
joins it through `cluster.address`, its rollout workers land on different nodes (the head's CPU is
reserved for the learner), and it finishes; a request the cluster cannot hold fails at once. The
custom Ray resources per role (`rollout.worker_resources`, `cluster.learner_resources`) are checked
here as bundles and fit errors; tests/test_ray_job.py uses them on a real `ray start` cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rl.cli import main
from rl.config import ConfigError
from rl.placement import HEAD, check_fit
from rl.tracking import default_uri

NODE = {"CPU": 1.0}
HEAD_NODE = {"CPU": 1.0, HEAD: 1.0}


def test_fit_check_accepts_what_fits():
    check_fit({"CPU": 1.0, HEAD: 0.001}, [NODE, NODE], [HEAD_NODE, NODE, NODE], "strict_spread")
    check_fit(None, [NODE, NODE], [{"CPU": 2.0}], "strict_pack")


@pytest.mark.parametrize(
    "driver, workers, nodes, placement, keys",
    [
        (None, [{"CPU": 2.0}], [HEAD_NODE, NODE], "spread", "rollout.cpus_per_worker"),  # no node holds one worker
        (None, [NODE] * 3, [HEAD_NODE, NODE], "pack", "rollout.num_workers"),  # 3 CPUs on 2
        (None, [{"CPU": 1.0, "GPU": 1.0}], [HEAD_NODE], "none", "rollout.gpus_per_worker"),  # no GPU anywhere
        ({"GPU": 1.0, HEAD: 0.001}, [NODE], [HEAD_NODE, {"CPU": 1.0, "GPU": 1.0}], "spread", "cluster.learner_gpus"),  # GPU not on the head
        (None, [NODE] * 2, [{"CPU": 4.0}], "strict_spread", "cluster.placement=strict_spread"),
        (None, [NODE] * 2, [HEAD_NODE, NODE], "strict_pack", "cluster.placement=strict_pack"),
    ],
)
def test_fit_check_names_the_keys_to_change(driver, workers, nodes, placement, keys):
    with pytest.raises(ConfigError, match=keys.replace(".", r"\.")):
        check_fit(driver, workers, nodes, placement)


REPO = Path(__file__).resolve().parents[1]
TWO_NODES = REPO / "experiments" / "cluster_two_nodes.yaml"  # what tests/test_ray_job.py submits


def test_custom_resources_join_the_bundles_of_their_role():
    from rl.config import load_config
    from rl.placement import driver_bundle, rank_bundles, worker_bundles

    cfg = load_config(TWO_NODES)
    assert driver_bundle(cfg) == {"CPU": 1.0, HEAD: 0.001, "learner_node": 1.0}
    assert rank_bundles(cfg) == []
    assert worker_bundles(cfg) == [{"CPU": 1.0, "rollout_node": 1.0}] * 2
    cfg = load_config(TWO_NODES, ["cluster.learner_ranks=2", "rollout.worker_resources={rollout_node: 0.5, fast_net: 1}"])
    assert rank_bundles(cfg) == [{"CPU": 1.0, "learner_node": 1.0}]  # each rank asks for it, not only rank 0
    assert worker_bundles(cfg) == [{"CPU": 1.0, "rollout_node": 0.5, "fast_net": 1.0}] * 2
    assert worker_bundles(load_config(TWO_NODES, ["rollout.worker_resources={}"])) == [{"CPU": 1.0}] * 2  # default: none


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["cluster.placement=none"], "rollout.worker_resources is reserved through the run's placement group"),
        (["cluster.learner_cpus=0"], "cluster.learner_resources joins the learner's bundle"),
        (["rollout.worker_resources={CPU: 1}"], "rollout.worker_resources: CPU is not a custom resource"),
        (["cluster.learner_resources={learner_node: 0}"], "cluster.learner_resources: amounts must be positive"),
    ],
)
def test_custom_resources_are_refused_where_they_cannot_apply(overrides, message):
    from rl.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(TWO_NODES, overrides)


LEARNER_NODE = {"CPU": 2.0, HEAD: 1.0, "learner_node": 2.0}
ROLLOUT_NODE = {"CPU": 2.0, "rollout_node": 2.0}
WORKER = {"CPU": 1.0, "rollout_node": 1.0}
DRIVER = {"CPU": 1.0, HEAD: 0.001, "learner_node": 1.0}


def test_fit_check_with_custom_resources():
    check_fit(DRIVER, [WORKER] * 2, [LEARNER_NODE, ROLLOUT_NODE], "spread", [{"CPU": 1.0, "learner_node": 1.0}])
    # two learner ranks, one learner_node on the cluster: the learner keys, naming the resource
    with pytest.raises(ConfigError, match=r"cluster\.learner_resources, cluster\.learner_ranks: the run needs learner_node=2, the cluster has 1"):
        check_fit(DRIVER, [WORKER] * 2, [{**LEARNER_NODE, "learner_node": 1.0}, ROLLOUT_NODE], "spread", [{"CPU": 1.0, "learner_node": 1.0}])


@pytest.mark.parametrize(
    "driver, workers, nodes, message",
    [
        # a resource no node has: the key of the role that asks for it
        (None, [{"CPU": 1.0, "gpu_node": 1.0}], [LEARNER_NODE, ROLLOUT_NODE], r"rollout\.worker_resources: no node has the resource 'gpu_node'"),
        ({**DRIVER, "learner_node": 1.0, "big_mem": 1.0}, [WORKER], [LEARNER_NODE, ROLLOUT_NODE], r"cluster\.learner_resources: no node has the resource 'big_mem'"),
        # the learner's resource on a node that is not the head: its bundle cannot go there
        (DRIVER, [WORKER], [{"CPU": 2.0, HEAD: 1.0}, {"CPU": 2.0, "learner_node": 1.0, "rollout_node": 1.0}], r"cluster\.learner_cpus, cluster\.learner_gpus, cluster\.learner_resources: the head node cannot hold"),
        # more workers than the nodes' rollout_node: the worker keys, naming the resource
        (DRIVER, [WORKER] * 3, [LEARNER_NODE, {"CPU": 4.0, "rollout_node": 2.0}], r"rollout\.worker_resources, rollout\.num_workers: the run needs rollout_node=3, the cluster has 2"),
        (None, [{"CPU": 1.0, "rollout_node": 3.0}], [LEARNER_NODE, ROLLOUT_NODE], r"rollout\.num_workers, rollout\.cpus_per_worker, rollout\.gpus_per_worker, rollout\.worker_resources: no node can hold one rollout worker"),
    ],
)
def test_fit_check_names_the_custom_resource_keys(driver, workers, nodes, message):
    with pytest.raises(ConfigError, match=message):
        check_fit(driver, workers, nodes, "spread")


TINY = """
run: {{name: cluster, seed: 5, runs_dir: {runs}}}
cluster: {{address: "{address}", placement: spread, learner_cpus: 1, placement_timeout_s: 20}}
policy: {{hidden_size: 64, num_layers: 2, num_heads: 2, head_dim: 32, intermediate_size: 128, max_position_embeddings: 32}}
sft: {{enabled: false}}
env: {{name: math, levels: [1], eval_size: 8}}
rollout: {{num_workers: 2, group_size: 4, max_new_tokens: 4}}
algorithm: {{dynamic_sampling: false}}
train: {{steps: 2, tasks_per_step: 4, eval_every: 0}}
tracking: {{progress: false}}
checkpoint: {{every: 0}}
"""


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, c.head_node.node_id, {n.node_id for n in workers}
    ray.shutdown()
    c.shutdown()


@pytest.mark.slow
def test_training_run_spreads_rollout_workers_over_nodes(tmp_path: Path, cluster, capsys):
    c, head, worker_nodes = cluster
    exp = tmp_path / "cluster.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs", address=c.address))
    run_dir = tmp_path / "runs" / "spread"
    assert main(["train", str(exp), "--run-dir", str(run_dir)]) == 0

    client = MlflowClient(default_uri(tmp_path / "runs"))
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED"
    placed = run.data.tags["swarmrl.worker_nodes"].split(",")
    assert len(placed) == 2 and placed[0] != placed[1]  # different nodes
    assert set(placed) == worker_nodes and head not in placed  # the head's CPU is the learner's
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "time/step_s")) == [1, 2]
    assert "2 rollout worker(s) ready on 2 node(s), placement spread" in "".join(capsys.readouterr())

    # more than the cluster holds: a clear error before anything starts, and nothing left reserved
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "runs" / "big"), "rollout.num_workers=3"]) == 2
    err = capsys.readouterr().err
    assert "rollout.num_workers" in err and "needs CPU=4" in err
    import time

    import ray

    # the previous run's actors release their CPUs asynchronously: wait (bounded), then assert
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 3.0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU") == 3.0


@pytest.mark.slow
def test_driver_under_ray_job_joins_the_cluster_of_its_ray_address(tmp_path: Path, cluster):
    """`ray job submit` starts the driver with RAY_ADDRESS set and no `cluster.address` in the YAML:
    the run must join that cluster, not start an embedded instance."""
    import os
    import subprocess
    import sys

    c, head, worker_nodes = cluster
    exp = tmp_path / "job.yaml"
    exp.write_text(TINY.format(runs=tmp_path / "runs", address="").replace('address: "", ', "").replace("steps: 2", "steps: 1"))
    run_dir = tmp_path / "runs" / "job"
    env = {**os.environ, "RAY_ADDRESS": c.address, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "rl", "train", str(exp), "--run-dir", str(run_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(default_uri(tmp_path / "runs"))
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert set(run.data.tags["swarmrl.worker_nodes"].split(",")) == worker_nodes
