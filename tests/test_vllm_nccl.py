"""The GPU weight-sync path (`rollout.engines.vllm_nccl`): its rank layout and Ray fan-out here;
the broadcast itself on a CUDA machine only."""

from __future__ import annotations

import importlib.util
import socket

import pytest
import ray
import torch

from rollout.engines.vllm_nccl import RolloutWeightClient, nccl_world_size, worker_init_payloads

VLLM_INIT = {"master_address": "10.0.0.1", "master_port": 29555, "rank_offset": 1, "world_size": 7, "packed": True}


def test_each_worker_gets_its_own_ranks_after_the_learner():
    payloads = worker_init_payloads(VLLM_INIT, num_workers=3, ranks_per_worker=2)
    assert [p["rank_offset"] for p in payloads] == [1, 3, 5]  # learner 0; workers {1,2}, {3,4}, {5,6}
    assert all(p["world_size"] == 7 and p["master_port"] == 29555 and p["packed"] for p in payloads)
    assert nccl_world_size(1, 1) == 2


def test_a_world_size_that_does_not_cover_every_rank_is_an_error():
    with pytest.raises(ValueError, match="need 5"):
        worker_init_payloads(VLLM_INIT, num_workers=2, ranks_per_worker=2)
    with pytest.raises(ValueError):
        nccl_world_size(0, 1)


def test_client_fans_every_control_call_out_to_every_worker():
    class RecordingWorker:  # defined here so that Ray ships it by value to its workers
        """Fake of a GPU rollout worker (NCCL cannot run here): records the control-plane calls it gets."""

        def __init__(self):
            self.calls = []

        def weight_sync_rpc(self, method, payload=None):
            self.calls.append((method, payload))

        def recorded(self):
            return self.calls

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, ignore_reinit_error=True)
    try:
        workers = [ray.remote(num_cpus=0)(RecordingWorker).remote() for _ in range(2)]
        client = RolloutWeightClient(workers, ranks_per_worker=1)
        client.init_weight_transfer_engine({**VLLM_INIT, "world_size": 3})
        client.start_weight_update()
        meta = {"names": ["w"], "dtype_names": ["float32"], "shapes": [[2, 2]]}
        client.update_weights(meta)
        client.finish_weight_update("7")
        calls = ray.get([w.recorded.remote() for w in workers])
        for i, c in enumerate(calls):
            assert [m for m, _ in c] == ["init_weight_transfer_engine", "start_weight_update", "update_weights", "finish_weight_update"]
            assert c[0][1]["rank_offset"] == 1 + i and c[2][1] == meta
    finally:
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None, reason="needs CUDA and vllm")
def test_nccl_broadcast_gives_hf_outputs_token_for_token():
    from policies.model import build_policy
    from rl.config import PolicyConfig
    from rollout import worker as rollout_worker
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine
    from rollout.engines.vllm_nccl import NCCLWeightSync

    policy = PolicyConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128)
    ray.init(include_dashboard=False, configure_logging=False, ignore_reinit_error=True)
    try:
        workers = rollout_worker.spawn_workers(
            1, policy, engine="vllm", batch_size=64, cpus=1, gpus=1, torch_threads=1, engine_options={"weight_transfer": "nccl"}
        )
        model, tok = build_policy(policy, seed=11)
        model = model.cuda()
        sync = NCCLWeightSync(model, workers, master_address="127.0.0.1", master_port=_free_port())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p) * p.std().clamp(min=0.02))
        sync.push()
        prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+2=", "40-13="]]
        params = SamplingParams(max_new_tokens=6, temperature=0)
        want = HFEngine(model.eval(), tok.eos_token_id, tok.pad_token_id).generate(prompts, params, seed=0)
        got = rollout_worker.generate(workers, prompts, params, seed=0)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
    finally:
        ray.shutdown()
