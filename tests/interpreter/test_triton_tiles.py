"""Tile boundaries, masks and loop edges of the Triton kernels, under
TRITON_INTERPRET=1. The interpreter's own configuration covers whole planes
with one program (it runs programs one by one); these tests force small
blocks so that every kernel runs several programs: masked channel tails,
partial column blocks, W-pass chunks that need a second round, several
row bands per image (partial last band), partial-sum segments of several
rows and multi-row reduction chunks, several M, N and K blocks."""
import contextlib

import pytest
import torch

import hrnet_fast
from hrnet_fast.triton import tuning
from _cases import assert_close_nonzero, leaf_copies, make_inputs

SMALL = {
    "fwd": {"BLOCK_P": 16, "BLOCK_C": 4},
    "bwd_rows": {"BLOCK_H": 2, "BLOCK_W": 4, "BLOCK_C": 4, "CHUNK_LOG2": 0},  # one-column W-pass chunks
    "bwd_cols": {"BLOCK_H": 2, "BLOCK_W": 2, "BLOCK_C": 4},
    "bwd_reduce": {"BLOCK_R": 2, "BLOCK_C": 4},
    "conv": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},
}


@contextlib.contextmanager
def small_tiles(kernels=tuple(SMALL)):
    with contextlib.ExitStack() as stack:
        for kernel in kernels:
            stack.enter_context(tuning.forced(kernel, SMALL[kernel]))
        yield


def _grads(backend, xs, ss, bs, grad, convs=(), **kw):
    xs, ss, bs = leaf_copies(xs), [None if s is None else leaf_copies([s])[0] for s in ss], leaf_copies(bs)
    flat = leaf_copies([t for term in convs for t in term if t is not None])
    it = iter(flat)
    terms = [(next(it), next(it), next(it) if b is not None else None) for _, _, b in convs]
    fn = hrnet_fast.reference if backend == "reference" else hrnet_fast.exchange
    extra = {} if backend == "reference" else {"backend": backend}
    y = fn(xs, ss, bs, convs=terms, **kw, **extra)
    (y * grad).sum().backward()
    leaves = xs + [s for s in ss if s is not None] + bs + flat
    return y.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("mode,align_corners,channels_last,smaller", [
    ("bilinear", False, True, [(3, 4), (4, 5)]),
    ("nearest", False, False, [(3, 4), (1, 2)]),
    ("bilinear", True, False, [(9, 11), (2, 3)]),  # an input larger than the output
], ids=["bilinear-nhwc", "nearest-nchw", "bilinear-align-downsizing"])
def test_small_tiles_forward_backward(mode, align_corners, channels_last, smaller):
    # 5 channels over blocks of 4; 9 columns over blocks of 4; 7 rows over
    # bands of 2; owned source-column ranges that exceed the W pass's chunk.
    xs, ss, bs = make_inputs(1, 5, (7, 9), smaller, channels_last=channels_last)
    ss[1] = None
    grad = torch.randn(1, 5, 7, 9)
    kw = dict(mode=mode, align_corners=align_corners)
    with small_tiles():
        y, got = _grads("triton", xs, ss, bs, grad, **kw)
    r, want = _grads("reference", xs, ss, bs, grad, **kw)
    assert_close_nonzero(y, r, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        assert_close_nonzero(g, w, rtol=1e-4, atol=1e-4)


def test_small_tiles_conv_terms():
    # 20 output channels over 16-wide blocks, 35 pixels over 16-pixel
    # blocks; conv inputs of 5 and 17 channels (tails of a 16-wide K block),
    # both parities; both layouts.
    torch.manual_seed(1)
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        xs, ss, bs = make_inputs(1, 20, (5, 7), [(3, 4)], channels_last=cl)
        convs = [(torch.randn(1, 5, 10, 13).contiguous(memory_format=fmt), torch.randn(20, 5, 3, 3) * 0.2,
                  torch.randn(20)),
                 (torch.randn(1, 17, 9, 14).contiguous(memory_format=fmt), torch.randn(20, 17, 3, 3) * 0.1, None)]
        grad = torch.randn(1, 20, 5, 7)
        with small_tiles(["conv"]):
            y, got = _grads("triton", xs, ss, bs, grad, convs=convs, mode="bilinear")
        r, want = _grads("reference", xs, ss, bs, grad, convs=convs, mode="bilinear")
        assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)
        for g, w in zip(got, want):
            assert_close_nonzero(g, w, rtol=1e-3, atol=1e-3)


def test_conv_epilogue_after_the_loop_matches():
    # EARLY=False: the exchange terms added after the K loop instead of first.
    xs, ss, bs = make_inputs(1, 18, (4, 6), [(2, 3), (1, 2)])
    convs = [(torch.randn(1, 9, 8, 11), torch.randn(18, 9, 3, 3) * 0.2, torch.randn(18))]
    for early in (True, False):
        with tuning.forced("conv", {"EARLY": early}):
            y = hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")
        r = hrnet_fast.reference(xs, ss, bs, convs=convs, mode="bilinear")
        assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)
