"""Multi-turn SFT demonstrations: observation text is context, never a target."""

from __future__ import annotations

import numpy as np

from envs import syntax as S
from envs.swarm import SwarmEnv
from policies.tokenizer import load_tokenizer
from rl.sft import segment_masked


def test_swarm_demonstrations_mark_observation_lines_untrained():
    demos = SwarmEnv().demonstrations(40, np.random.default_rng(0))
    for d in demos:
        assert "".join(text for text, _ in d["segments"]) == d["completion"]
        for text, trainable in d["segments"]:
            assert trainable == (not text.startswith(S.OBSERVATION))
    assert any(not trainable for d in demos for _, trainable in d["segments"])


def test_segment_masked_targets_only_the_policy_text_and_eos():
    tok = load_tokenizer()
    demo = {"prompt": "age kob\n", "segments": [["?kob\n", True], [">age 42 pin 17\n", False], ["=42\n", True]]}
    (row,) = segment_masked([demo], tok)
    ids, mask = row["input_ids"], row["assistant_masks"]
    assert len(ids) == len(mask) and ids[-1] == tok.eos_token_id and mask[-1] == 1
    targets = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=True)
    context = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert targets == "?kob\n=42\n"
    assert context == "age kob\n>age 42 pin 17\n"


def test_trl_builds_labels_from_the_segment_mask(tmp_path):
    """The mask reaches the loss: TRL's prepared dataset has -100 on prompt and observation tokens."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from policies.model import build_model
    from rl.config import PolicyConfig

    tok = load_tokenizer()
    model = build_model(PolicyConfig(hidden_size=32, num_layers=1, num_heads=1, head_dim=32, intermediate_size=64, max_position_embeddings=64), tok)
    demo = {"prompt": "age kob\n", "segments": [["?kob\n", True], [">age 42 pin 17\n", False], ["=42\n", True]]}
    rows = segment_masked([demo], tok)
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_length=64, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    labels = trainer.train_dataset[0]["labels"]
    ids = rows[0]["input_ids"]
    assert [i for i, lab in zip(ids, labels) if lab != -100] == [i for i, m in zip(ids, rows[0]["assistant_masks"]) if m]
