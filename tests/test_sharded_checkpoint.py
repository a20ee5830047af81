"""The sharded training-state checkpoint (`rl.distributed.checkpoint`) across world sizes.

One spawn of 2 gloo ranks (FSDP2, `fully_shard` per decoder layer then the root) does every
two-rank check; the single-process halves run in the test process, which has no process group.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from policies.model import build_policy
from policies.qk_probe import register_qk_probe
from policies.spec import PolicyConfig
from rl.distributed.checkpoint import (
    is_sharded_checkpoint,
    load_legacy_train_state,
    load_train_state,
    save_train_state,
)
from rl.optim.muonclip import build_optimizer
from tests.gloo_ranks import run_ranks

WORLD = 2
# the quickstart's llama, narrower and shallower so the spawned ranks stay quick
POLICY = dict(arch="llama", hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128, max_position_embeddings=16)


def _policy(seed: int, **overrides) -> torch.nn.Module:
    register_qk_probe()
    model, _ = build_policy(PolicyConfig(**{**POLICY, **overrides}), seed=seed)
    return model


def _batch(model: torch.nn.Module) -> torch.Tensor:
    # from the global RNG, so a resume only draws the same batch if the RNG was restored
    return torch.randint(model.config.vocab_size, (2, 12))


def _step(model: torch.nn.Module, optimizer, batch: torch.Tensor) -> None:
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _shard(model: torch.nn.Module) -> torch.nn.Module:
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t.clone()


def _full_state(model, optimizer) -> dict:
    """Parameters and optimizer state as whole tensors by name (collective under FSDP2)."""
    params = dict(model.named_parameters())
    return {
        "model": {n: _full(p.detach()) for n, p in params.items()},
        "optim": {
            part: {n: {k: _full(v) for k, v in opt.state[params[n]].items()} for n in optimizer.params_of(part)}
            for part, opt in optimizer.optimizers.items()
        },
    }


def _legacy_reference(folder: Path) -> dict:
    """model.pt / optimizer.pt as `_full_state` lays it out (torch numbers optimizer state by position)."""
    optim = torch.load(folder / "optimizer.pt", weights_only=True)
    return {
        "model": torch.load(folder / "model.pt", weights_only=True),
        "optim": {part: {n: optim[part]["state"][i] for i, n in enumerate(names)} for part, names in optim["param_names"].items()},
    }


def _shard_mismatches(model, optimizer, reference: dict, rank: int) -> list[str]:
    """Names whose local shard differs from the reference's full tensor's chunk for `rank`."""
    bad = []
    params = dict(model.named_parameters())

    def check(name, local, full):
        if isinstance(local, DTensor):
            ok = torch.equal(local.to_local(), full.chunk(WORLD, dim=0)[rank])
        else:
            ok = torch.equal(local, full)
        if not ok:
            bad.append(name)

    for n, p in params.items():
        check(n, p.detach(), reference["model"][n])
    for part, opt in optimizer.optimizers.items():
        for n in optimizer.params_of(part):
            saved = reference["optim"][part][n]
            if set(opt.state[params[n]]) != set(saved):
                bad.append(f"{part}/{n}: keys")
                continue
            for k, v in saved.items():
                check(f"{part}/{n}/{k}", opt.state[params[n]][k], v)
    return bad


def _two_rank_checks(rank: int, tmp: Path) -> dict:
    out: dict = {}
    torch.manual_seed(100 + rank)  # each rank draws its own batches

    # (1) train 2 steps, save, 1 more step: the straight run
    model = _shard(_policy(0))
    opt = build_optimizer(model, name="adamw")
    for _ in range(2):
        _step(model, opt, _batch(model))
    with torch.no_grad():  # an evaluation forward: FSDP2 leaves the root's parameters gathered
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))
    save_train_state(tmp / "two", model, opt)
    saved = _full_state(model, opt)
    batch = _batch(model)
    _step(model, opt, batch)
    after = _full_state(model, opt)["model"]
    straight = {n: p.detach().to_local().clone() for n, p in model.named_parameters()}
    torch.save(batch, tmp / f"batch{rank}.pt")
    if rank == 0:
        torch.save({"saved": saved, "after": after}, tmp / "two_full.pt")

    # ... and the resume: other weights, another RNG, then load and take the same step
    torch.manual_seed(999)
    model = _shard(_policy(1))
    opt = build_optimizer(model, name="adamw")
    load_train_state(tmp / "two", model, opt)
    resumed_batch = _batch(model)
    _step(model, opt, resumed_batch)
    out["same_batch"] = torch.equal(resumed_batch, batch)
    out["resume_differs"] = [n for n, p in model.named_parameters() if not torch.equal(p.detach().to_local(), straight[n])]

    # (3) the single-process MuonClip checkpoint, resharded over 2 ranks
    reference = _legacy_reference(tmp / "legacy")
    model = _shard(_policy(2))
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    load_train_state(tmp / "plain", model, opt)
    out["plain_mismatches"] = _shard_mismatches(model, opt, reference, rank)
    buffers = [s["momentum_buffer"] for s in opt.optimizers["muon"].state.values()]
    out["momentum_sharded"] = bool(buffers) and all(isinstance(b, DTensor) and b.to_local().abs().sum() > 0 for b in buffers)
    out["rng"] = torch.get_rng_state()

    # (4) the single-file format, into the 2-rank model
    model = _shard(_policy(3))
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    load_legacy_train_state(tmp / "legacy", model, opt)
    out["legacy_mismatches"] = _shard_mismatches(model, opt, reference, rank)
    return out


def test_checkpoint_reshards_between_one_and_two_ranks(tmp_path):
    assert not dist.is_initialized()  # the single-process halves run without a process group

    # a plain MuonClip run of 2 steps, saved in both formats (the single-file one as rl.checkpoint writes it)
    torch.manual_seed(0)
    model = _policy(0)
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    for _ in range(2):
        _step(model, opt, _batch(model))
    assert all(s["momentum_buffer"].abs().sum() > 0 for s in opt.optimizers["muon"].state.values())
    save_train_state(tmp_path / "plain", model, opt)
    (tmp_path / "legacy").mkdir()
    torch.save(model.state_dict(), tmp_path / "legacy" / "model.pt")
    torch.save(opt.state_dict(), tmp_path / "legacy" / "optimizer.pt")
    assert is_sharded_checkpoint(tmp_path / "plain") and not is_sharded_checkpoint(tmp_path / "legacy")

    results = run_ranks(_two_rank_checks, WORLD, tmp_path)

    # (1) 2 ranks: the resumed step is the straight run's step, bit for bit, RNG included
    assert (tmp_path / "two" / "train_state" / "__1_0.distcp").is_file()  # each rank wrote its shards
    for res in results:
        assert res["same_batch"] and res["resume_differs"] == []

    # (3) the single-process checkpoint on 2 ranks: each rank holds its chunk, Muon's momentum too
    for res in results:
        assert res["plain_mismatches"] == [] and res["momentum_sharded"]
    saved_rng = torch.load(tmp_path / "plain" / "rng_rank0.pt", weights_only=True)["torch"]
    assert torch.equal(results[0]["rng"], saved_rng)  # rank 0 takes the saved rank 0's stream
    assert not torch.equal(results[1]["rng"], saved_rng)  # rank 1, which the checkpoint lacks, is reseeded

    # (4) single files into the 2-rank model
    for res in results:
        assert res["legacy_mismatches"] == []

    # (2) the 2-rank checkpoint in one plain process: the gathered tensors, and the same next step
    two = torch.load(tmp_path / "two_full.pt", weights_only=True)
    model = _policy(5)
    opt = build_optimizer(model, name="adamw")
    load_train_state(tmp_path / "two", model, opt)
    assert _shard_mismatches(model, opt, two["saved"], rank=0) == []
    # FSDP averages the ranks' gradients: the plain step on both ranks' batches, halved, is the same step
    batches = [torch.load(tmp_path / f"batch{r}.pt", weights_only=True) for r in range(WORLD)]
    loss = sum(model(input_ids=b, labels=b).loss for b in batches) / WORLD
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), two["after"][n], atol=1e-5, rtol=0, msg=n)

    # (4) single files into the plain model
    model = _policy(6)
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    load_legacy_train_state(tmp_path / "legacy", model, opt)
    assert _shard_mismatches(model, opt, _legacy_reference(tmp_path / "legacy"), rank=0) == []


def test_mismatched_parameters_raise_before_loading(tmp_path):
    """(5) A checkpoint for other parameters is refused with a ValueError, and nothing is changed."""
    model = _policy(0)
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    save_train_state(tmp_path / "ck", model, opt)
    (tmp_path / "legacy").mkdir()
    torch.save(model.state_dict(), tmp_path / "legacy" / "model.pt")
    torch.save(opt.state_dict(), tmp_path / "legacy" / "optimizer.pt")

    other = _policy(1, num_layers=1)
    other_opt = build_optimizer(other, name="muonclip", ns_dtype="float32")
    before = {n: p.detach().clone() for n, p in other.named_parameters()}
    with pytest.raises(ValueError, match="saved for other parameters"):
        load_train_state(tmp_path / "ck", other, other_opt)
    with pytest.raises(ValueError, match="saved for other parameters"):
        load_legacy_train_state(tmp_path / "legacy", other, other_opt)
    plain_adamw = _policy(1)
    with pytest.raises(ValueError, match="optimizer parts"):
        load_train_state(tmp_path / "ck", plain_adamw, build_optimizer(plain_adamw, name="adamw"))
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())


def test_checkpoint_before_the_first_step_resumes_the_same_run(tmp_path):
    """An optimizer that never stepped is saved without state and comes back without state, so
    its first step after the resume is the first step of a straight run (AdamW's bias correction
    counts from 0, not from a step a loader invented)."""
    torch.manual_seed(0)
    model = _policy(0)
    opt = build_optimizer(model, name="muonclip", ns_dtype="float32")
    save_train_state(tmp_path / "ck", model, opt)
    assert all(not o.state for o in opt.optimizers.values())
    batch = _batch(model)
    _step(model, opt, batch)

    resumed = _policy(1)
    resumed_opt = build_optimizer(resumed, name="muonclip", ns_dtype="float32")
    load_train_state(tmp_path / "ck", resumed, resumed_opt)
    assert all(not o.state for o in resumed_opt.optimizers.values())
    _step(resumed, resumed_opt, batch)
    for (n, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), n
