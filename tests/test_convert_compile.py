"""torch.compile of converted models: whole-graph capture (no graph breaks)
in eval and train, with matching outputs, gradients and running buffers."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

import hrnet_fast
from hrnet_fast.models import HighResolutionModule
from test_convert_common import assert_same_grads, assert_same_state, loss_of, pair


@pytest.mark.parametrize("backend,in_op", [("auto", False), ("cpu", False), ("cpu", True)])
def test_compile_fullgraph_eval_and_train(backend, in_op):
    # aot_eager runs dynamo, fake tensors and AOT autograd (what matters for
    # the op's registration) without spending CI minutes in the C++ compiler.
    # "auto" on the CPU compiles the source's own summands; "cpu" keeps the
    # op, with batch statistics computed by the model or in the op.
    torch._dynamo.reset()
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=3), backend=backend)
    for m in hrnet_fast.fused_modules(fused):
        m.fused_exchange.batch_stats_in_op = in_op
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x))
    ref.train()
    fused.train()
    a, b = ref(x), compiled(x)
    torch.testing.assert_close(b, a)
    loss_of(a).backward()
    loss_of(b).backward()
    assert_same_grads(ref, fused)
    assert_same_state(ref, fused)


def test_compile_inductor_module():
    torch._dynamo.reset()
    ref, fused = pair(HighResolutionModule([4, 8], (1, 1), (4, 8), mode="bilinear", align_corners=True),
                      dtype=torch.float32)
    ref.eval()
    fused.eval()
    compiled = torch.compile(fused, fullgraph=True)
    xs = [torch.randn(2, 4, 12, 10), torch.randn(2, 8, 6, 5)]
    with torch.no_grad():
        for p, q in zip(ref([t.clone() for t in xs]), compiled([t.clone() for t in xs])):
            torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5)


def _ops_in_compiled_graph(model, *args, counts=False):
    """The ops of the graph torch.compile captures for `model(*args)` (a
    set, or a Counter with `counts`)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=capture, fullgraph=True)(*args)
    ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    return Counter(ops) if counts else set(ops)


@pytest.mark.parametrize("backend,expect_op", [("auto", False), ("cpu", True)])
def test_compiled_cpu_graph_gets_plain_ops_with_auto(backend, expect_op):
    # Compiled on the CPU with backend="auto", the exchange is the
    # definition's plain ops, which Inductor fuses with the neighbouring
    # convs' epilogues; a named backend keeps its op.
    _, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=3), dtype=torch.float32,
                    backend=backend)
    ops = _ops_in_compiled_graph(fused.eval(), torch.randn(1, 3, 64, 64))
    # (the argument rules' exchange_check op reads metadata only and
    # decomposes to nothing)
    has_op = any("hrnet_fast" in op and "exchange_check" not in op for op in ops)
    assert has_op == expect_op, sorted(ops)


@pytest.mark.parametrize("arch,kw", [("w18_small_v1", {"num_joints": 3}), ("w18_small_v2", {"num_classes": 3})])
def test_compiled_cpu_graph_does_the_unconverted_models_work(arch, kw):
    # With backend="auto" the compiler sees the source's own summands: as
    # many convolutions and batch norms as in the unconverted model, and no
    # fold, merged conv or GEMM-form 1x1 conv of the eager paths in the graph.
    head = "pose" if "num_joints" in kw else "seg"
    ref, fused = pair(hrnet_fast.models.create(arch, head, **kw), dtype=torch.float32)
    x = torch.randn(1, 3, 64, 64)
    heavy = ("conv2d", "batch_norm", "interpolate", "baddbmm", "matmul", "cat", "mul")
    want, got = (_ops_in_compiled_graph(m.eval(), x, counts=True) for m in (ref, fused))
    pick = {op: n for c in (want, got) for op, n in c.items() if any(h in op for h in heavy)}
    assert {op: got[op] for op in pick} == {op: want[op] for op in pick}

