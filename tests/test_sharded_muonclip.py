"""MuonClip on a model sharded with FSDP2 (`fully_shard`) over 2 gloo ranks: the same update as
one process.

One pair of spawned processes runs every distributed check (starting processes dominates the
time); each rank also runs the single-process reference on the full batch itself, so the two
sides start from bit-identical weights. Results come back through `torch.save` files.
"""

from __future__ import annotations

import copy
import math
import os
import socket
from datetime import timedelta

import pytest
import torch

from rl.optim.sharded_muon import assign_owners, shard_rows

WORLD = 2
STEPS = 3
TAU = 30.0
TOL = 1e-4


# ---------------------------------------------------------------- pure helpers (one process)


def test_shard_rows_split_like_torch_chunk():
    for rows in (1, 5, 7, 8, 96):
        for world in (2, 3, 4):
            expect = [c.shape[0] for c in torch.arange(rows).chunk(world)]
            expect += [0] * (world - len(expect))  # torch.chunk drops trailing empty chunks
            got = [shard_rows(rows, r, world) for r in range(world)]
            assert [b - a for a, b in got] == expect
            assert got[0][0] == 0 and all(got[r][1] == got[r + 1][0] for r in range(world - 1))


def test_assign_owners_balances_largest_first_and_is_deterministic():
    numels = [100, 10, 60, 50, 40, 10]
    owners = assign_owners(numels, 2)
    assert owners == assign_owners(list(numels), 2)
    load = [sum(n for n, o in zip(numels, owners) if o == r) for r in range(2)]
    assert sorted(load) == [130, 140]
    assert assign_owners([5, 5, 5], 4) == [0, 1, 2]  # more ranks than matrices: some own nothing


# ---------------------------------------------------------------- distributed (2 spawned ranks)


def _policy(arch, heads, kv, layers, hidden, inter, seed=0):
    from policies.model import build_policy
    from policies.spec import PolicyConfig

    cfg = PolicyConfig(arch=arch, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=32,
                       intermediate_size=inter, max_position_embeddings=64)
    model, _ = build_policy(cfg, seed=seed)
    with torch.no_grad():  # Qwen2's q/k biases start at zero: a bias left unscaled would go unseen
        gen = torch.Generator().manual_seed(seed + 1)
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def _mla(heads=3):
    from policies.qk_probe import QK_PROBE_ATTENTION
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    cfg = DeepseekV3Config(vocab_size=40, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=heads, num_key_value_heads=heads, q_lora_rank=None, kv_lora_rank=16,
                           qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12, first_k_dense_replace=2, n_routed_experts=4,
                           n_group=1, topk_group=1, num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=QK_PROBE_ATTENTION).float()


def _shard(model, mesh):
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    from torch.distributed.tensor import DTensor

    a = a.full_tensor() if isinstance(a, DTensor) else a
    return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0


def _check_muon(rank, mesh) -> dict:
    """3 MuonAdamW steps sharded vs one process; uneven direct orthogonalisation."""
    from kernels.newton_schulz import orthogonalize
    from rl.optim import build_optimizer
    from rl.optim.sharded_muon import sharded_orthogonalize
    from torch.distributed.tensor import Shard, distribute_tensor

    out = {}
    # uneven and empty shards: 5 rows -> 3 + 2, 1 row -> 1 + 0
    gen = torch.Generator().manual_seed(3)
    full = [torch.randn(5, 7, generator=gen), torch.randn(1, 3, generator=gen), torch.randn(9, 4, generator=gen)]
    dts = [distribute_tensor(m, mesh, [Shard(0)]) for m in full]
    local, work = sharded_orthogonalize(dts, [d.to_local() for d in dts], (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    expect = orthogonalize(full, dtype=torch.float32)
    out["uneven_diff"] = max(
        _max_diff(torch.cat(_all_gather_rows(l, m.shape, mesh)), e) for l, m, e in zip(local, full, expect)
    )
    out["uneven_owned"] = work.matrices

    model = _policy("llama", 4, None, 4, 128, 512)  # experiments/quickstart.yaml's policy
    ref = copy.deepcopy(model)
    _shard(model, mesh)
    kw = dict(name="muonclip", ns_dtype="float32", weight_decay=0.1, lr=0.02)
    opt, ref_opt = build_optimizer(model, **kw), build_optimizer(ref, **kw)
    vocab = model.config.vocab_size
    batch, rows = 5, [3, 2]  # uneven: each rank's mean loss is weighted by its share of rows
    start = sum(rows[:rank])
    for step in range(STEPS):
        ids = torch.randint(1, vocab, (batch, 12), generator=torch.Generator().manual_seed(100 + step))
        ref_opt.zero_grad()
        ref(input_ids=ids, labels=ids).loss.backward()
        ref_opt.step()
        mine = ids[start : start + rows[rank]]
        opt.zero_grad()
        # FSDP averages gradients over ranks: Σ_r (rows_r / B) ∇mean_r is the full-batch gradient
        (model(input_ids=mine, labels=mine).loss * (rows[rank] / batch) * WORLD).backward()
        opt.step()
    ref_params = dict(ref.named_parameters())
    out["param_diff"] = max(_max_diff(p, ref_params[n]) for n, p in model.named_parameters())
    muon, ref_muon = opt.optimizers["muon"], ref_opt.optimizers["muon"]
    bufs = zip(muon.param_groups[0]["params"], ref_muon.param_groups[0]["params"])
    out["momentum_diff"] = max(_max_diff(muon.state[p]["momentum_buffer"], ref_muon.state[q]["momentum_buffer"]) for p, q in bufs)
    out["momentum_is_dtensor"] = all(type(s["momentum_buffer"]).__name__ == "DTensor" for s in muon.state.values())
    out["owned"] = muon.last_owned.matrices
    out["owned_numel"] = muon.last_owned.numel
    out["muon_matrices"] = len(muon.param_groups[0]["params"])
    out["muon_numel"] = sum(p.numel() for p in muon.param_groups[0]["params"])
    return out


def _all_gather_rows(local: torch.Tensor, shape, mesh) -> list[torch.Tensor]:
    """Every rank's rows of a [R, n] matrix, in rank order (padded all_gather, then trimmed)."""
    import torch.distributed as dist

    chunk = math.ceil(shape[0] / WORLD)
    padded = torch.zeros(chunk, shape[1])
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(WORLD)]
    dist.all_gather(parts, padded, group=mesh.get_group(0))
    return [p[: b - a] for p, (a, b) in zip(parts, (shard_rows(shape[0], r, WORLD) for r in range(WORLD)))]


def _synthetic_logits(model, rank) -> tuple[dict, dict]:
    """(the true per-head maxima, this rank's view of them): each rank sees the true value on
    alternate heads and a lower one elsewhere, and rank 1 recorded nothing in layer 0."""
    from policies.qk_probe import attention_modules

    truth, seen = {}, {}
    for attn in attention_modules(model):
        heads = attn.config.num_attention_heads
        layer = attn.layer_idx
        values = torch.tensor([TAU * (1.5 + 0.7 * h + layer) if (h + layer) % 2 == 0 else TAU * 0.5 for h in range(heads)])
        truth[layer] = values
        if layer == 0:  # rank 1 recorded nothing here, rank 0 everything
            if rank == 0:
                seen[layer] = values
            continue
        mask = torch.tensor([(h % WORLD) == rank for h in range(heads)])
        seen[layer] = torch.where(mask, values, values - 40.0)
    return truth, seen


def _check_qk_clip(rank, mesh, name, model) -> dict:
    from rl.optim import qk_clip
    from rl.optim.qk_clip import reduce_max_logits

    ref = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    _shard(model, mesh)
    truth, seen = _synthetic_logits(ref, rank)
    reduced = reduce_max_logits(model, seen)
    out = {
        f"{name}_reduce_exact": sorted(reduced) == sorted(truth) and all(torch.equal(reduced[k], truth[k]) for k in truth),
    }
    stats = qk_clip(model, reduced, TAU)
    ref_stats = qk_clip(ref, truth, TAU)
    ref_params = dict(ref.named_parameters())
    out[f"{name}_diff"] = max(_max_diff(p, ref_params[n]) for n, p in model.named_parameters())
    out[f"{name}_stats"] = (stats, ref_stats)
    out[f"{name}_changed"] = sum(_max_diff(p, before[n]) > 0 for n, p in ref_params.items())
    return out


_MODELS = {
    "gqa_qwen2": lambda: _policy("qwen2", 3, 1, 2, 96, 64),  # 96 q rows over 2 ranks: head 1 straddles
    "mha_llama": lambda: _policy("llama", 3, None, 2, 96, 64),
    "mla": _mla,
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from policies.qk_probe import register_qk_probe
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    register_qk_probe()
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120))
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        results = _check_muon(rank, mesh)
        for name, build in _MODELS.items():
            results.update(_check_qk_clip(rank, mesh, name, build()))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    torch.multiprocessing.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_sharded_muon_matches_one_process(results):
    for r in results:
        assert r["param_diff"] < TOL, r["param_diff"]
        assert r["momentum_diff"] < TOL, r["momentum_diff"]
        assert r["momentum_is_dtensor"]
        assert r["uneven_diff"] < 1e-5, r["uneven_diff"]


def test_newton_schulz_work_is_split_not_repeated(results):
    total = results[0]["muon_matrices"]
    assert total == 28  # 4 layers x (q, k, v, o, gate, up, down)
    assert all(0 < r["owned"] < total for r in results)
    assert sum(r["owned"] for r in results) == total
    assert sum(r["owned_numel"] for r in results) == results[0]["muon_numel"]
    assert sum(r["uneven_owned"] for r in results) == 3


@pytest.mark.parametrize("name", list(_MODELS))
def test_sharded_qk_clip_matches_one_process(results, name):
    for r in results:
        assert r[f"{name}_reduce_exact"]
        assert r[f"{name}_diff"] == 0.0  # the same rows scaled by the same factors: bit-identical
        stats, ref_stats = r[f"{name}_stats"]
        assert stats == ref_stats and stats["clipped_heads"] > 0
        assert r[f"{name}_changed"] > 0  # the clip did act on the weights
