"""`sft.group_by_length`: batches of similar lengths, in random order (`rl.sft.length_grouped_order`)."""

from __future__ import annotations

import numpy as np

from rl.sft import length_grouped_order


def test_batches_hold_similar_lengths_and_the_kinds_stay_interleaved():
    rng = np.random.default_rng(0)
    # three kinds of demonstration, as in the swarm bootstrap at width 16: short, middle, long
    kind = rng.integers(0, 3, size=1000)
    lengths = [int((30, 250, 500)[k] + rng.integers(0, 20)) for k in kind]
    order = length_grouped_order(lengths, batch_size=16, rng=np.random.default_rng(1), window=10)
    assert sorted(order) == list(range(1000))  # every example once
    full = [order[k : k + 16] for k in range(0, 1000 - 1000 % 16, 16)]
    mixed = sum(1 for b in full if len({kind[i] for i in b}) > 1)  # only where a window's sorted run crosses kinds
    assert mixed <= len(full) // 4
    padded = sum(16 * max(lengths[i] for i in b) for b in full)
    shuffled = np.random.default_rng(2).permutation(1000)
    random_padded = sum(16 * max(lengths[i] for i in shuffled[k : k + 16]) for k in range(0, 1000 - 1000 % 16, 16))
    assert padded < 0.7 * random_padded
    # the batches' kinds alternate (random order); kept longest first per window, they would come
    # as runs of one kind, about 2 changes per window of 10 batches
    kinds = [round(np.mean([kind[i] for i in b])) for b in full]
    changes = sum(a != b for a, b in zip(kinds, kinds[1:]))
    assert changes > len(full) // 2


def test_a_short_last_batch_goes_last_and_the_order_is_seeded():
    lengths = list(range(100))  # one window: sorted, cut into 6 batches of 16 and one of 4
    a = length_grouped_order(lengths, 16, np.random.default_rng(3))
    assert a == length_grouped_order(lengths, 16, np.random.default_rng(3))
    assert a != length_grouped_order(lengths, 16, np.random.default_rng(4))
    assert sorted(a[-4:]) == [96, 97, 98, 99]  # the loader cuts every 16: a short batch anywhere else would shift the rest
    full = [sorted(a[k : k + 16]) for k in range(0, 96, 16)]
    assert all(b == list(range(b[0], b[0] + 16)) for b in full)
    assert [b[0] for b in full] != sorted(b[0] for b in full)  # not longest- or shortest-first
