"""hrnet_fast.optimize on a CUDA device: CUDA-graph capture and replay
against the same module without graphs, the shape-keyed cache and its
bound, outputs that later calls do not overwrite, float32 (no TF32) against
model.eval(), the bf16 / channels_last default within bf16's tolerance,
NaN carried as eager carries it, and torch.export on CUDA without custom ops.
Small models and inputs: the whole file runs in well under a minute.
Skipped without a CUDA device."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import hrnet_fast
from hrnet_fast.optimize.convs import CudnnConv, cudnn_relu_keeps_nan

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEV = "cuda"


def randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def rel_norm(got, want) -> float:
    got = got if isinstance(got, (list, tuple)) else [got]
    want = want if isinstance(want, (list, tuple)) else [want]
    worst = 0.0
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        g, w = g.double(), w.double()
        worst = max(worst, ((g - w).norm() / w.norm().clamp_min(1e-30)).item())
    return worst


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=5)).to(DEV).eval()


@pytest.fixture(scope="module")
def pose():
    torch.manual_seed(0)
    return randomize_bn(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=3)).to(DEV).eval()


@pytest.fixture()
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_float32_graph_matches_eager(seg, no_tf32):
    x = torch.randn(2, 3, 67, 45, device=DEV)
    with torch.no_grad():
        want = seg(x)
    graphed = hrnet_fast.optimize(seg, x, dtype=torch.float32)
    plain = hrnet_fast.optimize(seg, dtype=torch.float32, cuda_graph=False)
    assert graphed.report.cuda_graph and graphed.report.platform == "cudnn" and len(graphed.graphs) == 1
    a, b = graphed(x), plain(x)
    torch.cuda.synchronize()
    assert rel_norm(a, b) <= 1e-5
    assert rel_norm(a, want) <= 5e-4
    assert a.dtype == torch.float32 and a.is_contiguous()
    fallbacks = [c.fallback for c in graphed.modules() if isinstance(c, CudnnConv) and c.fallback]
    print(f"cuDNN fused-epilogue fallbacks (float32): {len(fallbacks)} {fallbacks[:1]}")


def test_bf16_default_within_tolerance(pose):
    x = torch.randn(2, 3, 64, 64, device=DEV)
    fast = hrnet_fast.optimize(pose, x)
    s = fast.settings
    assert s.dtype == torch.bfloat16 and s.channels_last and s.cuda_graph
    with torch.no_grad():
        want = pose(x)
        eager_bf16 = copy.deepcopy(pose).to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    got = fast(x)
    assert got.dtype == torch.float32
    err, eager_err = rel_norm(got, want), rel_norm(eager_bf16, want)
    print(f"bf16 relative error: optimized {err:.2e}, eager bf16 {eager_err:.2e}")
    assert err <= max(2 * eager_err, 1e-2)
    fallbacks = [c.fallback for c in fast.modules() if isinstance(c, CudnnConv) and c.fallback]
    print(f"cuDNN fused-epilogue fallbacks (bf16): {len(fallbacks)} {fallbacks[:1]}")


def test_shape_cache_and_its_bound(pose):
    fast = hrnet_fast.optimize(pose)
    fast.graphs.max_entries = 2
    xa = torch.randn(1, 3, 64, 64, device=DEV)
    xb = torch.randn(2, 3, 64, 64, device=DEV)
    xc = torch.randn(1, 3, 96, 64, device=DEV)
    ya = fast(xa)
    yb = fast(xb)
    assert len(fast.graphs) == 2
    graph_a = fast.graphs.entries[fast.graphs.key(xa)].graph
    ya2 = fast(xa)  # replayed, not captured again
    assert fast.graphs.entries[fast.graphs.key(xa)].graph is graph_a
    assert torch.equal(ya, ya2)
    with pytest.warns(UserWarning, match="graph cache holds 2"):
        yc = fast(xc)  # cache full: runs without a graph
    assert len(fast.graphs) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast(xc)  # warned once
    eager = hrnet_fast.optimize(pose, cuda_graph=False)
    for x, y in ((xa, ya), (xb, yb), (xc, yc)):
        assert rel_norm(y, eager(x)) <= 1e-2
    fast.clear_graphs()
    assert len(fast.graphs) == 0
    fast(xc)
    assert len(fast.graphs) == 1


def test_outputs_are_not_overwritten_by_later_calls(pose):
    fast = hrnet_fast.optimize(pose)
    x1 = torch.randn(1, 3, 64, 64, device=DEV)
    x2 = torch.randn(1, 3, 64, 64, device=DEV)
    y1 = fast(x1)
    kept = y1.clone()
    y2 = fast(x2)
    torch.cuda.synchronize()
    assert torch.equal(y1, kept)
    assert not torch.equal(y1, y2)
    static = fast.graphs.entries[fast.graphs.key(x1)].static_output
    assert y1.data_ptr() != static.data_ptr() and y2.data_ptr() != static.data_ptr()


def test_input_rules_on_cuda(pose):
    fast = hrnet_fast.optimize(pose)
    with pytest.raises(ValueError, match="on cuda"):
        fast(torch.randn(1, 3, 64, 64))  # a CPU tensor
    with pytest.raises(ValueError):
        fast(torch.randn(1, 3, 64, 64, device=DEV, dtype=torch.float16))


def test_hooks_turn_graphs_off(pose):
    seen = []
    handle = pose.final_layer.register_forward_hook(lambda m, i, o: seen.append(1))
    try:
        fast = hrnet_fast.optimize(pose)
        assert not fast.report.cuda_graph and fast.graphs is None
        fast(torch.randn(1, 3, 64, 64, device=DEV))
        fast(torch.randn(1, 3, 64, 64, device=DEV))
        assert len(seen) == 2
    finally:
        handle.remove()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_propagates_as_in_eager(seg, no_tf32, dtype):
    """Issue 24.1 on the cuDNN path, graphs on: one NaN input pixel gives
    NaN exactly where eager (float32) has it. PyTorch asks cuDNN's fused
    ReLU not to propagate NaN, so the fused call must be off where the
    probe says it maps NaN to 0."""
    x = torch.randn(1, 3, 64, 64, device=DEV)
    x[0, 1, 30, 20] = float("nan")
    with torch.no_grad():
        want = seg(x)
    fast = hrnet_fast.optimize(seg, x, dtype=dtype)
    assert fast.report.platform == "cudnn" and fast.report.cuda_graph
    keeps = cudnn_relu_keeps_nan(torch.device(DEV), dtype)
    relu_convs = [c for c in fast.modules() if isinstance(c, CudnnConv) and c.epilogue.relu]
    assert relu_convs and all(c.library_relu is keeps for c in relu_convs)
    print(f"cuDNN's fused ReLU keeps NaN ({dtype}): {keeps}")
    got = fast(x)
    torch.cuda.synchronize()
    assert want.isnan().any()
    assert torch.equal(got.isnan(), want.isnan())
    if dtype == torch.float32:  # and the clean input as before
        clean = torch.randn(1, 3, 64, 64, device=DEV)
        with torch.no_grad():
            assert rel_norm(fast(clean), seg(clean)) <= 5e-4


def test_torch_export_on_cuda_keeps_no_custom_op(seg):
    """Issue 25.1 on CUDA, where the exchange's backend is the CUDA op: a
    converted model exports to standard ops only."""
    fused = hrnet_fast.convert(copy.deepcopy(seg))
    x = torch.randn(1, 3, 64, 64, device=DEV)
    program = torch.export.export(fused, (x,))
    targets = {str(n.target) for gm in program.graph_module.modules() if hasattr(gm, "graph")
               for n in gm.graph.nodes if n.op == "call_function"}
    assert not any("hrnet_fast" in t for t in targets), sorted(targets)
    with torch.no_grad():
        assert rel_norm(program.module()(x), seg(x)) <= 1e-4
