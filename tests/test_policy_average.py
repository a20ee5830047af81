"""The evaluated weight average (`train.eval_ema`): the closed form, its checks, its config rules."""

from __future__ import annotations

import pytest
import torch

from rl.config import ConfigError, load_config
from rl.policy_average import PolicyAverage


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def set_weights(net: Net, value: float, count: int) -> None:
    with torch.no_grad():
        net.lin.weight.fill_(value)
        net.lin.bias.fill_(-value)
    net.count.fill_(count)


def test_average_is_the_exponential_moving_average_of_the_updates():
    net = Net()
    set_weights(net, 1.0, 0)
    avg = PolicyAverage(net, decay=0.75)
    for value, count in [(5.0, 1), (9.0, 2)]:
        set_weights(net, value, count)
        avg.update(net)
    # 0.75² · 1 + 0.75 · 0.25 · 5 + 0.25 · 9
    expected = 0.5625 * 1.0 + 0.1875 * 5.0 + 0.25 * 9.0
    w = avg.state_dict()
    torch.testing.assert_close(w["lin.weight"], torch.full((2, 3), expected))
    torch.testing.assert_close(w["lin.bias"], torch.full((2,), -expected))
    assert int(w["count"]) == 2  # integer buffers follow the model, they are not averaged
    # the average is a copy: the model's own weights are untouched
    assert float(net.lin.weight.detach()[0, 0]) == 9.0


def test_state_round_trip_and_refusals():
    net = Net()
    set_weights(net, 2.0, 0)
    avg = PolicyAverage(net, decay=0.5)
    set_weights(net, 4.0, 3)
    avg.update(net)
    other = PolicyAverage(Net(), decay=0.5)
    other.load_state_dict({k: v.clone() for k, v in avg.state_dict().items()})
    for k, v in avg.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    with pytest.raises(KeyError, match="lin.bias"):
        other.load_state_dict({"lin.weight": torch.zeros(2, 3), "count": torch.zeros((), dtype=torch.long)})
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="decay"):
            PolicyAverage(net, decay=decay)


def test_config_bounds_the_decay():
    assert load_config("experiments/quickstart.yaml", ["train.eval_ema=0.9"]).train.eval_ema == 0.9
    assert load_config("experiments/quickstart.yaml", ["train.eval_ema=null"]).train.eval_ema is None
    for bad in ("1.0", "0", "-0.5"):
        with pytest.raises(ConfigError, match="train.eval_ema"):
            load_config("experiments/quickstart.yaml", [f"train.eval_ema={bad}"])
