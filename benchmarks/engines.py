"""Generation throughput: the `hf` engine against the `vllm` engine, same model, same prompts, one process.

  python benchmarks/engines.py [--hidden 128] [--layers 4] [--tasks 32] [--group 8]
                               [--max-new-tokens 16] [--temperature 1.0] [--repeats 3] [--threads 1]

The model is the quickstart's tiny Llama (random init, head_dim 32) unless sized otherwise; the
prompts are math-env tasks, each repeated `--group` times as in a rollout step. Each repeat runs
`hf` then `vllm` on the same prompts with the same seed (so a load change on the machine hits
both alike) and counts the completion tokens each produced; the table shows the median
tokens/s, completions/s, and the time of one weight sync (`load_weights` of the full state
dict, the per-step cost of keeping the engine on-policy). Ratio = vllm / hf.

Threads: `torch.set_num_threads(--threads)` after both engines are built (vLLM changes it when it
starts), so both decode with the same number of threads. vLLM runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), with its CPU KV cache at `VLLM_CPU_KVCACHE_SPACE` = 1 GiB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    from envs.registry import make_env
    from policies.model import build_policy
    from rl.config import PolicyConfig
    from rollout.engines.base import SamplingParams
    from rollout.engines.hf import HFEngine
    from rollout.engines.vllm import VLLMEngine

    policy = PolicyConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 32, head_dim=32, intermediate_size=4 * args.hidden, max_position_embeddings=256)
    model, tok = build_policy(policy, seed=0)
    model.eval()
    tasks = make_env("math", levels=[1, 2, 3]).sample(args.tasks, np.random.default_rng(0))
    prompts = [tok(t.prompt, add_special_tokens=False)["input_ids"] for t in tasks for _ in range(args.group)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)

    t0 = time.perf_counter()
    vllm_engine = VLLMEngine.from_model(model, tok, max_model_len=256, kv_cache_gib=1)
    start_s = time.perf_counter() - t0
    engines = {"hf": HFEngine(model, tok.eos_token_id, tok.pad_token_id), "vllm": vllm_engine}
    torch.set_num_threads(args.threads)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    runs: dict[str, dict[str, list[float]]] = {name: {"tok_s": [], "comp_s": [], "sync_s": []} for name in engines}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, engine in engines.items():
            t0 = time.perf_counter()
            out = engine.generate(prompts, params, seed=repeat)
            dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            engine.load_weights(state)
            sync = time.perf_counter() - t0
            if repeat:
                runs[name]["tok_s"].append(sum(len(c.token_ids) for c in out) / dt)
                runs[name]["comp_s"].append(len(out) / dt)
                runs[name]["sync_s"].append(sync)

    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama hidden {args.hidden}, {args.layers} layers, {n_params / 1e6:.2f}M params; {len(prompts)} prompts "
        f"({args.tasks} tasks x {args.group}), max_new_tokens {args.max_new_tokens}, T={args.temperature}, "
        f"torch threads {args.threads}, median of {args.repeats}; vLLM engine start {start_s:.1f} s"
    )
    print(f"{'engine':<8}{'tokens/s':>12}{'completions/s':>16}{'weight sync ms':>17}")
    for name, m in med.items():
        print(f"{name:<8}{m['tok_s']:>12.0f}{m['comp_s']:>16.1f}{1000 * m['sync_s']:>17.1f}")
    print(f"{'ratio':<8}{med['vllm']['tok_s'] / med['hf']['tok_s']:>11.2f}x{med['vllm']['comp_s'] / med['hf']['comp_s']:>15.2f}x{med['vllm']['sync_s'] / med['hf']['sync_s']:>16.2f}x")


if __name__ == "__main__":
    main()
