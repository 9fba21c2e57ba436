"""Deployment through traces, ONNX and torch.export (issues 17, 25): a
converted or optimized model traces (torch.jit.trace) and exports
(torch.onnx.export, dynamo and legacy; torch.export) to standard operators
that ONNX Runtime, or a process without hrnet_fast, runs with the same
outputs."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import hrnet_fast
from test_convert_common import pair

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model(head="seg", mode_kw=None):
    kw = {"num_classes": 3} if head == "seg" else {"num_joints": 3}
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", head, **kw, **(mode_kw or {})), dtype=torch.float32)
    return ref.eval(), fused.eval()


@pytest.mark.parametrize("head", ["seg", "pose"])
def test_jit_trace_of_a_converted_model(head):
    ref, fused = _model(head)
    x = torch.randn(1, 3, 64, 96)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fused, x)
    graph = str(traced.inlined_graph)
    assert "hrnet_fast::" not in graph  # no custom op: the definition's standard operators
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ref(x), rtol=1e-4, atol=1e-4)


def test_jit_trace_of_the_op_itself():
    x0, x1 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(lambda a, b: hrnet_fast.exchange([a, b]), (x0, x1))
    torch.testing.assert_close(traced(x0, x1), hrnet_fast.reference([x0, x1]))


def _ort_run(path_or_bytes, x):
    sess = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("head,mode_kw", [("seg", {}), ("seg", {"align_corners": True}), ("pose", {})])
def test_onnx_export_runs_in_onnxruntime(dynamo, head, mode_kw, tmp_path):
    ref, fused = _model(head, mode_kw)
    x = torch.randn(1, 3, 64, 96)
    path = str(tmp_path / "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(fused, (x,), path, dynamo=True, verbose=False)
        else:
            torch.onnx.export(fused, (x,), path, dynamo=False)
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    assert {"Resize", "Relu"} <= ops and not any(n.domain.startswith("hrnet") for n in model.graph.node)
    (got,) = _ort_run(path, x)
    with torch.no_grad():
        want = ref(x)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)


def _optimized(head="seg", mode_kw=None):
    ref, _ = _model(head, mode_kw)
    return ref, hrnet_fast.optimize(ref)


@pytest.mark.parametrize("head", ["seg", "pose"])
def test_jit_trace_of_an_optimized_model(head):
    # The fused library convolutions (oneDNN post-ops, prepacked weights)
    # are recorded in their plain form: folded F.conv2d, add, ReLU.
    ref, fast = _optimized(head)
    assert fast.settings.platform.value == "mkldnn"  # the fused form is what runs outside the trace
    x = torch.randn(1, 3, 64, 96)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fast, x)
    graph = str(traced.inlined_graph)
    assert "hrnet_fast::" not in graph and "mkldnn" not in graph
    assert "batch_norm" not in graph  # folded
    y = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(traced(y), ref(y), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast(y), ref(y), rtol=1e-4, atol=1e-4)  # and it still runs fused


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_onnx_export_of_an_optimized_model_runs_in_onnxruntime(dynamo, tmp_path):
    ref, fast = _optimized("seg", {"align_corners": True})
    x = torch.randn(1, 3, 64, 96)
    path = str(tmp_path / "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fast, (x,), path, dynamo=dynamo)
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Resize", "Relu"} <= ops and "BatchNormalization" not in ops
    assert not any(n.domain.startswith(("hrnet", "com.microsoft")) for n in model.graph.node)
    (got,) = _ort_run(path, x)
    with torch.no_grad():
        want = ref(x)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)


# Loads and runs exported programs in a process where importing hrnet_fast
# fails: whatever the programs need must be standard PyTorch.
_LOAD_ELSEWHERE = textwrap.dedent("""
    import sys
    sys.modules["hrnet_fast"] = None  # any import of it raises
    import torch
    d = sys.argv[1]
    x = torch.load(d + "/x.pt")
    outs = {}
    for name in sys.argv[2:]:
        ep = torch.export.load(d + "/" + name + ".pt2")
        with torch.no_grad():
            outs[name] = ep.module()(x)
    torch.save(outs, d + "/outs.pt")
    assert not any(m.startswith("hrnet_fast") and sys.modules[m] is not None for m in sys.modules)
""")


def _custom_ops(program) -> list:
    """The calls of hrnet_fast's ops (and of the process-bound oneDNN
    calls) in an exported program, its submodules' graphs included."""
    return sorted({str(n.target) for gm in program.graph_module.modules() if hasattr(gm, "graph")
                   for n in gm.graph.nodes
                   if n.op == "call_function" and any(k in str(n.target) for k in ("hrnet_fast", "mkldnn"))})


def test_torch_export_loads_and_runs_without_hrnet_fast(tmp_path):
    """Issue 25.1: torch.export of a converted and of an optimized model
    keeps no hrnet_fast op, so torch.export.load works in a process that
    never imports hrnet_fast, with the source model's outputs."""
    ref, fused = _model("seg", {"align_corners": True})
    fast = hrnet_fast.optimize(ref)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = ref(x)
    for name, model in (("converted", fused), ("optimized", fast)):
        program = torch.export.export(model, (x,))
        assert _custom_ops(program) == [], name
        torch.export.save(program, str(tmp_path / f"{name}.pt2"))
    torch.save(x, tmp_path / "x.pt")
    res = subprocess.run([sys.executable, "-c", _LOAD_ELSEWHERE, str(tmp_path), "converted", "optimized"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = torch.load(tmp_path / "outs.pt")
    for name in ("converted", "optimized"):
        torch.testing.assert_close(outs[name], want, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
