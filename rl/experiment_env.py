"""The env an experiment trains on: the task family of `env`, its prompts rendered for the policy."""

from __future__ import annotations

from envs.base import Env
from envs.registry import env_kwargs, make_env
from rl.config import ExperimentConfig


def experiment_env(cfg: ExperimentConfig) -> Env:
    """`make_env` for `cfg.env`; with `policy.chat_template`, prompts go through the chat template
    of the policy's tokenizer (`policies.chat`)."""
    env = make_env(cfg.env.name, **env_kwargs(cfg))
    if not cfg.policy.chat_template:
        return env
    from envs.rendered import RenderedPrompts
    from policies.chat import chat_renderer
    from policies.tokenizer import load_tokenizer

    return RenderedPrompts(env, chat_renderer(load_tokenizer(cfg.policy.tokenizer or cfg.policy.path), cfg.env.system_prompt))
