"""Where the roles of a run land on a Ray cluster: one placement-group bundle per rollout worker,
plus one on the head node for the driver (learner and verification), with a fit check first so a
request the cluster cannot hold fails at once with the keys to change instead of hanging.

The driver itself is not a Ray actor: its bundle is a reservation on the head node (where
`ray job submit` runs drivers) that keeps rollout workers off the learner's CPUs/GPUs. A learner
with a GPU runs in an actor scheduled into that bundle (`rl.learner_host`), which then owns it.
With `cluster.learner_ranks` N > 1, rank 0 takes that bundle and ranks 1..N-1 one bundle each of
the same size, anywhere (`rl.learner_group`): bundles [driver/rank 0, ranks 1..N-1, workers...].
"""

from __future__ import annotations

from typing import Any

from rl.config import ConfigError, ExperimentConfig

HEAD = "node:__internal_head__"  # a resource only the head node has
STRATEGIES = {"pack": "PACK", "spread": "SPREAD", "strict_pack": "STRICT_PACK", "strict_spread": "STRICT_SPREAD"}
WORKER_KEYS = "rollout.num_workers, rollout.cpus_per_worker, rollout.gpus_per_worker"
DRIVER_KEYS = "cluster.learner_cpus, cluster.learner_gpus"
RANK_KEYS = "cluster.learner_ranks, cluster.learner_cpus, cluster.learner_gpus"
# custom Ray resources (`ray start --resources`) per role: merged into that role's bundles
LEARNER_RESOURCES, WORKER_RESOURCES = "cluster.learner_resources", "rollout.worker_resources"
STANDARD = {"CPU", "GPU", HEAD}


def driver_bundle(cfg: ExperimentConfig) -> dict[str, float] | None:
    c = cfg.cluster
    if not (c.learner_cpus or c.learner_gpus):
        return None
    return {k: v for k, v in {"CPU": c.learner_cpus, "GPU": c.learner_gpus, HEAD: 0.001, **c.learner_resources}.items() if v}


def rank_bundles(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """The bundles of learner ranks 1..N-1 (rank 0 is in the driver's bundle)."""
    c = cfg.cluster
    bundle = {k: v for k, v in {"CPU": c.learner_cpus, "GPU": c.learner_gpus, **c.learner_resources}.items() if v}
    return [dict(bundle) for _ in range(c.learner_ranks - 1)] if bundle else []


def worker_bundles(cfg: ExperimentConfig) -> list[dict[str, float]]:
    r = cfg.rollout
    return [{k: v for k, v in {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker, **r.worker_resources}.items() if v} for _ in range(r.num_workers)]


def check_fit(
    driver: dict[str, float] | None, workers: list[dict[str, float]], nodes: list[dict[str, float]], placement: str, ranks: list[dict[str, float]] = ()
) -> None:
    """Raise `ConfigError` naming the keys when the bundles cannot be placed on `nodes` (their total
    resources) under `placement`. Necessary conditions only: resources other jobs hold are caught
    by the placement group's timeout instead."""

    def fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
        return all(node.get(k, 0.0) >= v for k, v in bundle.items())

    def describe(bundle: dict[str, float]) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in bundle.items() if k != HEAD) or "nothing"

    def custom(role: list[dict[str, float]]) -> set[str]:
        return {k for b in role for k in b} - STANDARD

    largest = ", ".join(describe(n) for n in nodes)
    learner_role = ([driver] if driver else []) + list(ranks)
    for key, role in ((LEARNER_RESOURCES, learner_role), (WORKER_RESOURCES, workers)):
        for name in sorted(custom(role)):
            if not any(name in n for n in nodes):
                raise ConfigError(f"{key}: no node has the resource {name!r} (give it to nodes with `ray start --resources='{{\"{name}\": N}}'`; nodes: {largest})")
    if driver is not None and not any(fits(driver, n) for n in nodes if HEAD in n):
        extra = f", {LEARNER_RESOURCES}" if custom([driver]) else ""
        raise ConfigError(f"{DRIVER_KEYS}{extra}: the head node cannot hold {describe(driver)} (nodes: {largest})")
    if workers and not any(fits(workers[0], n) for n in nodes):
        extra = f", {WORKER_RESOURCES}" if custom(workers) else ""
        raise ConfigError(f"{WORKER_KEYS}{extra}: no node can hold one rollout worker ({describe(workers[0])}; nodes: {largest})")
    bundles = ([driver] if driver else []) + list(ranks) + workers
    for key in {k for b in bundles for k in b} - {HEAD}:
        need, have = sum(b.get(key, 0.0) for b in bundles), sum(n.get(key, 0.0) for n in nodes)
        if need > have:
            keys = f"{WORKER_KEYS}, {RANK_KEYS}" if ranks else f"{WORKER_KEYS}, {DRIVER_KEYS}"
            if key not in STANDARD:  # a custom resource: the roles that ask for it
                keys = ", ".join(k for k, role in ((f"{LEARNER_RESOURCES}, cluster.learner_ranks", learner_role), (f"{WORKER_RESOURCES}, rollout.num_workers", workers)) if key in custom(role))
            raise ConfigError(f"{keys}: the run needs {key}={need:g}, the cluster has {have:g}")
    if placement == "strict_spread" and len(bundles) > len(nodes):
        raise ConfigError(f"cluster.placement=strict_spread puts each of {len(bundles)} bundles on its own node; the cluster has {len(nodes)}")
    if placement == "strict_pack":
        total = {k: sum(b.get(k, 0.0) for b in bundles) for k in {k for b in bundles for k in b}}
        if not any(fits(total, n) for n in nodes):
            raise ConfigError(f"cluster.placement=strict_pack needs one node with {describe(total)} (nodes: {largest})")


def node_resources() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def place_roles(cfg: ExperimentConfig) -> tuple[Any, list | None]:
    """Check the request fits, then reserve it. Returns (placement group or None, one scheduling
    strategy per rollout worker or None to let Ray schedule freely)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    driver, ranks, workers = driver_bundle(cfg), rank_bundles(cfg), worker_bundles(cfg)
    check_fit(driver, workers, node_resources(), cfg.cluster.placement, ranks)
    if cfg.cluster.placement == "none":
        return None, None
    bundles = ([driver] if driver else []) + ranks + workers
    pg = placement_group(bundles, strategy=STRATEGIES[cfg.cluster.placement])
    try:
        ray.get(pg.ready(), timeout=cfg.cluster.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise ConfigError(
            f"cluster.placement={cfg.cluster.placement}: the cluster could not reserve {len(bundles)} bundles within "
            f"cluster.placement_timeout_s={cfg.cluster.placement_timeout_s:g} s (other jobs hold resources?); "
            f"lower {WORKER_KEYS} or {DRIVER_KEYS}, or add nodes"
        ) from None
    first = (1 if driver else 0) + len(ranks)
    return pg, [PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=first + i) for i in range(len(workers))]


def worker_nodes(workers: list) -> list[str]:
    """The Ray node id of each rollout worker, in order."""
    import ray

    return ray.get([w.node_id.remote() for w in workers])
