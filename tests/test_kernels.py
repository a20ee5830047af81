"""kernels/: each implementation against its reference, forward and gradients, fp32 and bf16.

Tolerances are relative to the reference's largest magnitude, per dtype:
  float32   1e-5   (same math, different summation order)
  bfloat16  2e-2   (a few units of bf16's 2^-8 rounding: chunked and full matmuls, or tensor
                    tiles, may round the same logits or Gram entries differently)
Newton-Schulz in bf16 amplifies single roundings over its five steps: torch's own bf16 result
is 1-2e-2 away (relative Frobenius norm) from the fp32 iteration. A bf16 Triton result is held to
4e-2 from the fp32 iteration: Triton's interpreter truncates float32 → bf16 where a GPU rounds
to nearest, which about doubles the error on CPU.

The `test_triton_*` tests run the Triton kernels compiled on a GPU when there is one; without
one, `test_kernels_under_triton_interpreter` reruns them in a fresh process under Triton's
interpreter (TRITON_INTERPRET=1, numpy on CPU, tiny shapes and tiles; it must be on before triton
is imported, and transformers imports it). `test_kernels_compile_for_sm80` also compiles them for
an NVIDIA target with the ptxas that ships in the triton wheel, which catches what the
interpreter lets through (non-constexpr globals, type errors).
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

from kernels.backend import triton_installed, use_triton
from kernels.logprob import chunked_logprobs, naive_logprobs
from kernels.newton_schulz import NS_COEFFICIENTS, newton_schulz, newton_schulz_reference, orthogonalize
from kernels.qk_max import qk_max_logit, qk_max_logit_chunked, qk_max_logit_reference

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
NS_TOL = {torch.float32: 1e-5, torch.bfloat16: 4e-2}  # against the float32 iteration


def assert_near(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> None:
    """max |actual - expected| ≤ rel · max(1, max |expected|), and the same non-finite entries."""
    a, e = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert a.shape == e.shape, (what, a.shape, e.shape)
    assert torch.equal(torch.isfinite(a), torch.isfinite(e)), what
    fin = torch.isfinite(e)
    assert torch.equal(a[~fin], e[~fin]), what
    if fin.any():
        err = (a[fin] - e[fin]).abs().max().item()
        scale = max(1.0, e[fin].abs().max().item())
        assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} × {scale:.3g}"


def ns_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest relative Frobenius distance over the stack [B, m, n]."""
    a, e = actual.float().cpu(), expected.float().cpu()
    return (torch.linalg.matrix_norm(a - e) / torch.linalg.matrix_norm(e)).max().item()


@pytest.fixture
def gen():
    """A fresh generator per test, seeded from the test's name: reproducible, not shared."""
    return torch.Generator().manual_seed(zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode()))


# ------------------------------------------------------------------------------------------
# chunked log-prob and entropy


def _logprob_case(n, v, d, dtype, gen, lead=None, scale=1.0):
    shape = (*lead, d) if lead else (n, d)
    h = (torch.randn(shape, generator=gen) * scale).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=gen) * d**-0.5).to(dtype).requires_grad_()
    t = torch.randint(0, v, shape[:-1], generator=gen)
    g_lp, g_ent = torch.randn(shape[:-1], generator=gen), torch.randn(shape[:-1], generator=gen)
    return h, w, t, g_lp, g_ent


def _run(fn, h, w, t, g_lp, g_ent, **kw):
    h.grad = w.grad = None
    lp, ent = fn(h, w, t, **kw)
    ((lp * g_lp).sum() + (ent * g_ent).sum()).backward()
    return lp.detach(), ent.detach(), h.grad.clone(), w.grad.clone()


LOGPROB_SHAPES = [  # (N, V, D, chunk rows, temperature)
    (1, 50, 16, 4, 1.0),
    (37, 101, 48, 8, 1.0),  # N not a multiple of the chunk
    (37, 1000, 48, 5, 0.7),
    (64, 333, 32, None, 1.3),  # default chunk (one chunk here)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,d,chunk,temp", LOGPROB_SHAPES)
def test_chunked_logprobs_match_naive(n, v, d, chunk, temp, dtype, gen):
    h, w, t, g_lp, g_ent = _logprob_case(n, v, d, dtype, gen)
    ref = _run(naive_logprobs, h, w, t, g_lp, g_ent, temperature=temp)
    got = _run(chunked_logprobs, h, w, t, g_lp, g_ent, temperature=temp, chunk_size=chunk, backend="torch")
    for name, a, e in zip(("logprob", "entropy", "grad hidden", "grad weight"), got, ref):
        assert_near(a, e, TOL[dtype], name)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert got[2].dtype == got[3].dtype == dtype
    assert (got[0] <= 0).all() and (got[1] >= -1e-5).all() and (got[1] <= torch.log(torch.tensor(float(v))) + 1e-4).all()


def test_chunked_logprobs_leading_dims_and_unused_outputs(gen):
    h, w, t, g_lp, _ = _logprob_case(None, 77, 24, torch.float32, gen, lead=(3, 5))
    lp_ref, ent_ref = naive_logprobs(h, w, t)
    lp_ref.mul(g_lp).sum().backward()  # entropy unused: its gradient is None in backward
    ref = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    lp, ent = chunked_logprobs(h, w, t, chunk_size=4, backend="torch")
    assert lp.shape == ent.shape == (3, 5)
    lp.mul(g_lp).sum().backward()
    assert_near(lp, lp_ref, 1e-5, "logprob")
    assert_near(ent, ent_ref, 1e-5, "entropy")
    assert_near(h.grad, ref[0], 1e-5, "grad hidden")
    assert_near(w.grad, ref[1], 1e-5, "grad weight")


def test_chunked_logprobs_frozen_head_and_large_logits(gen):
    # Logits in the hundreds: the softmax must be shifted, and the entropy must not cancel badly.
    h, w, t, g_lp, g_ent = _logprob_case(9, 64, 16, torch.float32, gen, scale=200.0)
    w.requires_grad_(False)
    lp_ref, ent_ref = naive_logprobs(h, w, t)
    (lp_ref * g_lp + ent_ref * g_ent).sum().backward()
    grad_ref, h.grad = h.grad.clone(), None
    lp, ent = chunked_logprobs(h, w, t, chunk_size=2, backend="torch")
    (lp * g_lp + ent * g_ent).sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert lp_ref.abs().max() > 10  # the case is what it claims
    assert_near(lp, lp_ref, 1e-5, "logprob")
    assert_near(ent, ent_ref, 1e-5, "entropy")
    assert_near(h.grad, grad_ref, 1e-5, "grad hidden")


def test_chunked_logprobs_save_no_token_by_vocab_tensor(gen):
    """What autograd keeps between forward and backward: [N, V] for the naive path, nothing of that size here."""
    n, v, d = 40, 300, 8
    h, w, t, *_ = _logprob_case(n, v, d, torch.float32, gen)

    def largest_saved(fn, **kw):
        sizes = []

        def pack(x):
            sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            lp, ent = fn(h, w, t, **kw)
        return max(sizes)

    assert largest_saved(naive_logprobs) >= n * v
    assert largest_saved(chunked_logprobs, chunk_size=8, backend="torch") <= max(n * d, v * d)


def test_chunked_logprobs_reject_bad_arguments(gen):
    h, w, t, *_ = _logprob_case(4, 10, 8, torch.float32, gen)
    with pytest.raises(ValueError, match="temperature"):
        chunked_logprobs(h, w, t, temperature=0.0)
    with pytest.raises(ValueError, match="disagree"):
        chunked_logprobs(h, w, t[:3])
    with pytest.raises(ValueError, match="hidden size"):
        chunked_logprobs(h[:, :4], w, t)


# ------------------------------------------------------------------------------------------
# Newton-Schulz


NS_SHAPES = [(3, 20, 37), (2, 37, 20), (1, 48, 48), (2, 1, 5)]


@pytest.mark.parametrize("shape", NS_SHAPES)
def test_newton_schulz_reference_is_torch_muon_per_matrix(shape, gen):
    muon = pytest.importorskip("torch.optim._muon")
    g = torch.randn(shape, generator=gen)
    expected = torch.stack([muon._zeropower_via_newtonschulz(m, NS_COEFFICIENTS, 5, 1e-7) for m in g])
    got = newton_schulz_reference(g)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)  # same ops in the same order: bit for bit


def test_newton_schulz_orthogonalises_and_transposes_consistently(gen):
    g = torch.randn(4, 24, 40, generator=gen)
    x = newton_schulz(g, dtype=torch.float32, backend="torch")
    sv = torch.linalg.svdvals(x)  # [4, 24]
    # The quintic's fixed point band: singular values land in about [0.68, 1.13], not at 1.
    assert sv.min() > 0.6 and sv.max() < 1.2
    sv_in = torch.linalg.svdvals(g)
    assert sv_in.max() / sv_in.min() > 3  # the input was far from orthogonal
    assert_near(newton_schulz(g.mT, dtype=torch.float32, backend="torch"), x.mT, 1e-5, "transpose")
    # Scale-free: only the direction of the update matters.
    assert_near(newton_schulz(g * 1e3, dtype=torch.float32, backend="torch"), x, 1e-5, "scale")


def test_newton_schulz_zero_matrix_stays_zero():
    out = newton_schulz(torch.zeros(2, 8, 6), backend="torch")
    assert torch.equal(out, torch.zeros(2, 8, 6, dtype=torch.bfloat16))


def test_orthogonalize_groups_by_shape_and_keeps_order(gen):
    mats = [torch.randn(s, generator=gen) for s in [(8, 12), (12, 8), (8, 12), (5, 5), (8, 12)]]
    out = orthogonalize(mats, dtype=torch.float32, backend="torch")
    assert [o.shape for o in out] == [m.shape for m in mats]
    for o, m in zip(out, mats):
        assert_near(o, newton_schulz(m, dtype=torch.float32, backend="torch"), 1e-5)
    with pytest.raises(ValueError, match="2-D"):
        orthogonalize([torch.randn(2, 3, 4)])


# ------------------------------------------------------------------------------------------
# per-head max QK logit


def _qk_case(gen, b=2, h=4, hkv=2, q_len=13, k_len=13, d=24, dtype=torch.float32):
    q = torch.randn(b, h, q_len, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, k_len, d, generator=gen).to(dtype)
    return q, k


def _padding_mask(b, t, pads, side, float_dtype=None):
    """SDPA-style 4-D causal mask with `pads[i]` padding tokens on `side` of row i; bool, or additive float."""
    keep = torch.ones(b, t, dtype=torch.bool)  # [B, T]
    for i, p in enumerate(pads):
        keep[i, slice(0, p) if side == "left" else slice(t - p, t)] = False
    m = torch.tril(torch.ones(t, t, dtype=torch.bool))[None, None] & keep[:, None, None, :]  # [B, 1, T, T]
    if float_dtype is None:
        return m
    return torch.zeros(m.shape, dtype=float_dtype).masked_fill(~m, torch.finfo(float_dtype).min)


def _brute_force(q, k, mask, scaling, causal, groups):
    """The documented definition, one pair at a time (independent of `valid_pairs`)."""
    b, h, q_len, _ = q.shape
    k_len = k.shape[2]
    out = torch.full((h,), float("-inf"))
    for bi in range(b):
        for hi in range(h):
            for i in range(q_len):
                if mask is not None:
                    allowed = lambda j: bool(mask[bi if mask.shape[0] > 1 else 0, hi if mask.shape[1] > 1 else 0, i, j] > (0 if mask.dtype == torch.bool else torch.finfo(mask.dtype).min / 2))  # noqa: E731
                    if q_len <= k_len and not allowed(k_len - q_len + i):  # query i is token K - Q + i
                        continue
                elif causal and q_len > 1:
                    allowed = lambda j: j <= i  # noqa: E731
                else:
                    allowed = lambda j: True  # noqa: E731
                for j in range(k_len):
                    if allowed(j):
                        s = float(q[bi, hi, i].float() @ k[bi, hi // groups, j].float()) * scaling
                        out[hi] = max(out[hi], s)
    return out


def _qk_cases(gen, dtype=torch.float32):
    """(name, query, key, mask, is_causal, kv_groups) covering the probe's semantics."""
    q, k = _qk_case(gen, dtype=dtype)
    q1 = q[:, :, -1:]
    k_long = torch.randn(2, 2, 20, 24, generator=gen).to(dtype)
    q40, k40 = _qk_case(gen, q_len=40, k_len=40, dtype=dtype)  # several query and key tiles
    per_head = _padding_mask(2, 13, (0, 3), "left").expand(2, 4, 13, 13).clone()
    # 5 queries after an 8-token KV cache: row 0's cache ends in 2 padding slots and its last 2
    # queries are padding; row 1 has none
    keep = torch.ones(2, 13, dtype=torch.bool)
    keep[0, [6, 7, 11, 12]] = False
    cached = (torch.arange(13)[None, :] <= 8 + torch.arange(5)[:, None])[None, None] & keep[:, None, None, :]  # [2, 1, 5, 13]
    q_cached = q[:, :, :5].clone()
    q_cached[0, :, 3:] *= 10  # the padding queries would hold every head's max if they counted
    per_head[:, 1] = False  # head 1 attends nowhere: -inf
    return [
        ("causal, GQA", q, k, None, True, 2),
        ("bidirectional", q, k, None, False, 2),
        ("one query attends to all keys", q1, k, None, True, 2),
        ("keys past the queries are empty slots", q, k_long, None, True, 2),
        ("left padding, bool", q, k, _padding_mask(2, 13, (0, 4), "left"), True, 2),
        ("right padding, bool", q, k, _padding_mask(2, 13, (3, 0), "right"), True, 2),
        ("left padding, additive float", q, k, _padding_mask(2, 13, (5, 1), "left", torch.float32), True, 2),
        ("per-head mask, one head blind", q, k, per_head, True, 2),
        ("queries after a KV cache, padded", q_cached, k, cached, True, 2),
        ("no GQA", q, torch.randn(2, 4, 13, 24, generator=gen).to(dtype), None, True, 1),
        ("causal, 40 tokens", q40, k40, None, True, 2),
        ("right padding, 40 tokens", q40, k40, _padding_mask(2, 40, (0, 7), "right"), True, 2),
    ]


def test_qk_max_reference_matches_brute_force(gen):
    for name, q, k, mask, causal, groups in _qk_cases(gen):
        assert_near(qk_max_logit_reference(q, k, mask, 0.3, causal, groups), _brute_force(q, k, mask, 0.3, causal, groups), 1e-5, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qk_max_chunked_matches_reference_and_the_probe(dtype, gen):
    from policies.qk_probe import max_qk_logit

    for name, q, k, mask, causal, groups in _qk_cases(gen, dtype):
        ref = qk_max_logit_reference(q, k, mask, 0.3, causal, groups)
        for chunk in (1, 50, None):  # one element per chunk means one query row per chunk
            assert_near(qk_max_logit_chunked(q, k, mask, 0.3, causal, groups, chunk_elements=chunk), ref, TOL[torch.float32], name)
        assert_near(max_qk_logit(q, k, mask, 0.3, causal, groups), ref, TOL[torch.float32], f"probe: {name}")
        if name.startswith("per-head"):
            assert ref[1] == float("-inf") and torch.isfinite(ref[[0, 2, 3]]).all()


def test_qk_max_rejects_heads_that_do_not_group(gen):
    q, k = _qk_case(gen, h=4, hkv=3)
    with pytest.raises(ValueError, match="key heads"):
        qk_max_logit(q, k, None, 1.0, True, 1)


# ------------------------------------------------------------------------------------------
# dispatch


def test_backend_selection(monkeypatch):
    cpu = torch.zeros(1)
    assert not use_triton(cpu, "auto")  # the interpreter is never picked by itself
    assert not use_triton(cpu, "torch")
    with pytest.raises(ValueError, match="unknown backend"):
        use_triton(cpu, "cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA tensors|triton package"):
        use_triton(cpu, "triton")


# ------------------------------------------------------------------------------------------
# Triton kernels (interpreter on CPU, compiled on CUDA)

needs_triton = pytest.mark.skipif(not triton_installed(), reason="triton is not installed (pip install -e .[test])")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(scope="module")
def triton_device():
    """The device the `test_triton_*` tests run on: CUDA, or CPU under Triton's interpreter.

    The interpreter must be on before triton is first imported (triton's own helpers such as
    tl.max are defined then), and transformers imports triton, so on a machine without a GPU
    these tests run in a fresh process: `test_kernels_under_triton_interpreter`.
    """
    if not triton_installed():
        pytest.skip("triton is not installed (pip install -e .[test])")
    if torch.cuda.is_available():
        return "cuda"
    if INTERPRETED:
        return "cpu"
    pytest.skip("no GPU: run in a subprocess under TRITON_INTERPRET=1 by test_kernels_under_triton_interpreter")


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available() or INTERPRETED, reason="the Triton tests run in this process")
def test_kernels_under_triton_interpreter():
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "test_triton_", __file__],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    functions = [name for name in globals() if name.startswith("test_triton_")]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= len(functions) > 0, summary
    assert not re.search(r"skipped|failed|error", summary), summary


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,d,chunk,temp", [(1, 50, 16, 4, 1.0), (37, 101, 48, 8, 0.7), (20, 333, 32, None, 1.0)])
def test_triton_logprobs_match_naive(n, v, d, chunk, temp, dtype, triton_device, gen, monkeypatch):
    import kernels.logprob_triton as lt

    monkeypatch.setattr(lt, "BLOCK_V", 64)  # several column blocks per row, the last one partial
    h, w, t, g_lp, g_ent = (x.to(triton_device) for x in _logprob_case(n, v, d, dtype, gen))
    h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
    ref = _run(naive_logprobs, h, w, t, g_lp, g_ent, temperature=temp)
    got = _run(chunked_logprobs, h, w, t, g_lp, g_ent, temperature=temp, chunk_size=chunk, backend="triton")
    for name, a, e in zip(("logprob", "entropy", "grad hidden", "grad weight"), got, ref):
        assert_near(a, e, TOL[dtype], name)


@needs_triton
def test_triton_logprobs_large_logits(triton_device, gen):
    h, w, t, g_lp, g_ent = (x.to(triton_device) for x in _logprob_case(6, 40, 16, torch.float32, gen, scale=200.0))
    h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
    ref = _run(naive_logprobs, h, w, t, g_lp, g_ent)
    got = _run(chunked_logprobs, h, w, t, g_lp, g_ent, chunk_size=4, backend="triton")
    for name, a, e in zip(("logprob", "entropy", "grad hidden", "grad weight"), got, ref):
        assert_near(a, e, 1e-5, name)


@needs_triton
@pytest.mark.parametrize("add_input", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_symmetric_gram(add_input, dtype, triton_device, gen):
    from kernels.newton_schulz_triton import sym_gram

    y = torch.randn(2, 37, 37 if add_input else 21, generator=gen).to(dtype)
    if add_input:
        y = (y + y.mT) / 2  # the kernel's contract: a square Y is symmetric
    y = y.to(triton_device)
    out = torch.full((2, 37, 37), float("nan"), dtype=dtype, device=triton_device)  # every entry must be written
    sym_gram(y, out, alpha=0.5, beta=-2.0, add_input=add_input, block=16, block_k=16)  # 3×3 tiles, 6 computed
    yf = y.float()
    expected = 0.5 * yf @ yf.mT + (-2.0 * yf if add_input else 0.0)
    off_diagonal_tiles = (torch.arange(37)[:, None] // 16) != (torch.arange(37)[None, :] // 16)  # [37, 37]
    assert torch.equal(out[:, off_diagonal_tiles], out.mT[:, off_diagonal_tiles])  # mirrored, not computed twice
    assert_near(out, expected, TOL[dtype], "gram")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 20, 37), (1, 37, 20), (3, 16, 16)])
def test_triton_newton_schulz_matches_reference(shape, dtype, triton_device, gen):
    from kernels.newton_schulz_triton import newton_schulz_triton

    g = torch.randn(shape, generator=gen).to(triton_device)
    ref = newton_schulz_reference(g, dtype=torch.float32)
    got = newton_schulz_triton(g, NS_COEFFICIENTS, 5, 1e-7, dtype, block=16, block_k=16)
    assert got.dtype == dtype and got.shape == g.shape
    assert ns_error(got, ref) <= NS_TOL[dtype]
    assert ns_error(newton_schulz(g, dtype=dtype, backend="triton"), ref) <= NS_TOL[dtype]  # default tiles


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_qk_max_matches_reference(dtype, triton_device, gen):
    from kernels.qk_max_triton import qk_max_logit_triton

    for name, q, k, mask, causal, groups in _qk_cases(gen, dtype):
        q, k = q.to(triton_device), k.to(triton_device)
        mask = None if mask is None else mask.to(triton_device)
        ref = qk_max_logit_reference(q, k, mask, 0.3, causal, groups)
        got = qk_max_logit_triton(q, k, mask, 0.3, causal, groups, block_q=16, block_k=16)
        assert_near(got, ref, TOL[torch.float32], name)  # products of bf16 inputs are exact in fp32
        assert_near(qk_max_logit(q, k, mask, 0.3, causal, groups, backend="triton"), ref, TOL[torch.float32], name)


@needs_triton
@pytest.mark.parametrize("kernel", ["logprob_forward", "logprob_grad", "sym_gram", "qk_max_masked"])
def test_kernels_compile_for_sm80(kernel):
    """Compile (not run) each kernel for an A100-class GPU; bf16, the production dtype."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    from kernels import logprob_triton as lt, newton_schulz_triton as nt, qk_max_triton as qt

    i32 = "i32"
    specs = {
        "logprob_forward": (lt._forward_rows_kernel, dict(logits_ptr="*bf16", stride_row="i64", targets_ptr="*i64", logprob_ptr="*fp32",
                            entropy_ptr="*fp32", lse_ptr="*fp32", V=i32, inv_t="fp32"), dict(BLOCK=1024)),
        "logprob_grad": (lt._grad_rows_kernel, dict(logits_ptr="*bf16", stride_row="i64", targets_ptr="*i64", lse_ptr="*fp32",
                         entropy_ptr="*fp32", g_logprob_ptr="*fp32", g_entropy_ptr="*fp32", V=i32, inv_t="fp32"), dict(BLOCK=1024)),
        "sym_gram": (nt._sym_gram_kernel, dict(y_ptr="*bf16", out_ptr="*bf16", pairs_ptr="*i32", M=i32, K=i32,
                     **dict.fromkeys(["stride_yb", "stride_ym", "stride_yk", "stride_ob", "stride_om", "stride_on"], i32),
                     alpha="fp32", beta="fp32"), dict(ADD_INPUT=True, IEEE=False, UPCAST=False, BLOCK=64, BLOCK_K=32)),
        "qk_max_masked": (qt._qk_max_kernel, dict(q_ptr="*bf16", k_ptr="*bf16", mask_ptr="*bf16", row_ok_ptr="*u8", out_ptr="*fp32",
                          H=i32, Q=i32, K=i32, D=i32, kv_groups=i32, scaling="fp32", threshold="fp32",
                          **dict.fromkeys("sqb sqh sqq sqd skb skh skk skd smb smh smq smk srb srh srq".split(), i32)),
                          dict(MODE=qt.MASKED, ROW_OK=True, IEEE=False, UPCAST=False, BLOCK_Q=64, BLOCK_K=64, BLOCK_D=64)),
    }
    fn, signature, constexprs = specs[kernel]
    if not isinstance(fn, JITFunction):  # defined under the interpreter
        fn = JITFunction(fn.fn)
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature={**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs=constexprs),
                                  target=GPUTarget("cuda", 80, 32))
    except RuntimeError as e:  # no ptxas next to the wheel on this platform
        if "ptxas" in str(e).lower():
            pytest.skip(f"cannot compile for sm_80 here: {e}")
        raise
    assert compiled.asm["cubin"]
