"""The learner's forward pass with each distinct prompt computed once.

A GRPO batch holds G completions of every prompt. Run as one right-padded batch, the model
computes each prompt G times; here the prompts (every token before a row's first trained
token) go through the model once, their KV cache rows are copied to the rows that
share them, and only the rest of each row goes through the model a second time, attending to
that cache. The positions, masks and therefore the outputs are those of the plain pass; the
gradient reaching a shared prompt is the sum over its rows, as it is in the plain pass.

With 8-token prompts and 6-token answers (the quickstart) that is about half the learner's
forward and backward compute.

    rows:    [B, L]   prompt_b + completion_b, right-padded   (the plain pass: B x L positions)
    prefix:  [P, Wp]  the P distinct prompts, right-padded     (P x Wp)
    suffix:  [B, Ws]  each row after its prompt, right-padded  (B x Ws, attends to the cache)
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import DynamicCache

from rl.batch import TrainBatch
from rollout.prompt_index import distinct_prompts

# forward(input_ids, attention_mask, position_ids=..., past_key_values=..., use_cache=...) -> [rows, T, X]
Forward = Callable[..., torch.Tensor]


def shared_prefix_outputs(forward: Forward, batch: TrainBatch) -> torch.Tensor | None:
    """[B, L-1, X]: what `forward` gives at the positions that predict trained tokens (and at
    the positions after them in each row); zeros at the other prompt positions, which predict no
    trained token. None when no two rows share a prompt, or the batch carries images, or a row
    has no trained token: then the plain pass costs the same or is the only one that applies."""
    mask = batch.completion_mask  # [B, L-1]
    trained = mask > 0
    if batch.pixel_values is not None or not bool(trained.any(dim=1).all()):
        return None
    ids = batch.input_ids
    lengths = batch.attention_mask.sum(dim=1)  # [B]
    prompt_lens = trained.float().argmax(dim=1) + 1  # [B]: the first trained token's index
    prompts, row_of = distinct_prompts([r[:p] for r, p in zip(ids.tolist(), prompt_lens.tolist())])
    if len(prompts) == len(row_of):
        return None

    # the distinct prompts, right-padded like the plain pass: every real position attends to what
    # it attends to there, and a padding position is one that may not attend to itself (which
    # the QK probe leaves out, as it does in the plain pass)
    wp = max(len(p) for p in prompts)
    p_ids = torch.zeros((len(prompts), wp), dtype=torch.long)
    p_mask = torch.zeros((len(prompts), wp), dtype=torch.long)
    for i, p in enumerate(prompts):
        p_ids[i, : len(p)] = torch.tensor(p)
        p_mask[i, : len(p)] = 1
    device = ids.device
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    row_of = row_of.to(device)
    p_pos = torch.arange(wp, device=device).expand(len(prompts), wp)
    cache = DynamicCache()
    prefix_out = forward(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, past_key_values=cache, use_cache=True)  # [P, Wp, X]
    cache.reorder_cache(row_of)  # an index_select: the rows' gradients add up on their shared prompt

    # each row after its prompt, right-padded, at the positions it has in the plain pass
    suffix_lens = lengths - prompt_lens  # [B], >= 1
    ws = int(suffix_lens.max())
    cols = torch.arange(ws, device=device)
    s_valid = cols[None, :] < suffix_lens[:, None]  # [B, Ws]
    src = (prompt_lens[:, None] + cols[None, :]).clamp(max=ids.shape[1] - 1)
    s_ids = torch.where(s_valid, ids.gather(1, src), torch.zeros_like(src))
    s_pos = prompt_lens[:, None] + cols[None, :]
    full_mask = torch.cat([p_mask[row_of], s_valid.long()], dim=1)  # [B, Wp + Ws]
    suffix_out = forward(input_ids=s_ids, attention_mask=full_mask, position_ids=s_pos, past_key_values=cache, use_cache=True)  # [B, Ws, X]

    # h[:, j] predicts the row's token prompt_len + j: the prompt's last position, then the suffix
    last = prefix_out[row_of, prompt_lens - 1]  # [B, X]
    h = torch.cat([last[:, None], suffix_out[:, :-1]], dim=1)  # [B, Ws, X]
    # back to the plain layout: position t predicts token t+1, i.e. h[:, t - (prompt_len - 1)]
    t = torch.arange(mask.shape[1], device=device)
    j = t[None, :] - (prompt_lens[:, None] - 1)  # [B, L-1]
    inside = (j >= 0) & (j < ws)
    out = h.gather(1, j.clamp(0, ws - 1)[..., None].expand(-1, -1, h.shape[-1]))
    return out * inside[..., None].to(out.dtype)
