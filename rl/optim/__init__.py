"""MuonClip: Muon + AdamW (`build_optimizer`) and QK-Clip (`qk_clip`)."""

from rl.optim.muonclip import MuonAdamW, build_optimizer, split_params
from rl.optim.qk_clip import qk_clip

__all__ = ["MuonAdamW", "build_optimizer", "qk_clip", "split_params"]
