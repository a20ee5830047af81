"""benchmarks/learner_scaling.py's in-actor probe, on an in-process learner (no Ray): it reads
the process's memory and the Newton-Schulz time and work of Muon's last step."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from policies.model import build_policy
from rl.config import load_config
from rl.learner import Learner
from tests.test_microbatch import _grouped_batch

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("learner_scaling", ROOT / "benchmarks/learner_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reads_memory_and_the_last_newton_schulz_step():
    bench = _benchmark()
    cfg = load_config(ROOT / "experiments/quickstart.yaml", ["sft.enabled=false", "optimizer.name=muonclip", "rollout.max_new_tokens=12"])
    model, tok = build_policy(cfg.policy, seed=0)
    learner = Learner.from_config(model, cfg)
    muon = learner.optimizer.optimizers["muon"]
    assert muon.last_ns_seconds == 0.0
    learner.update(_grouped_batch(tok, prompts=2, group=4, seed=0))
    probe = bench._probe(SimpleNamespace(learner=learner))
    matrices = [p for n, p in model.named_parameters() if n in learner.optimizer.params_of("muon")]
    assert probe["owned"] == (len(matrices), sum(p.numel() for p in matrices))
    assert probe["ns_seconds"] > 0.0
    assert probe["ns_dtype"] == "torch.float32"
    assert probe["params_mib"] == sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert 0 < probe["VmRSS"] <= probe["VmHWM"] and probe["ru_maxrss"] > 0


def test_phase_hooks_split_the_update_at_muons_step():
    bench = _benchmark()
    cfg = load_config(ROOT / "experiments/quickstart.yaml", ["sft.enabled=false", "optimizer.name=muonclip", "rollout.max_new_tokens=12"])
    model, tok = build_policy(cfg.policy, seed=0)
    actor = SimpleNamespace(learner=Learner.from_config(model, cfg))
    bench._watch_muon_step(actor)
    actor.learner.update(_grouped_batch(tok, prompts=2, group=4, seed=0))
    probe = bench._probe(actor)
    for key in ("hwm_before_step", "rss_before_step", "hwm_in_step", "rss_after_step"):
        assert probe[key] > 0, key
    assert probe["hwm_in_step"] >= probe["rss_after_step"]
