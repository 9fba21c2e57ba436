"""Deployment through traces and ONNX (issue 17): a converted model traces
(torch.jit.trace) and exports (torch.onnx.export, dynamo and legacy) to
standard operators that ONNX Runtime runs with the same outputs."""
from __future__ import annotations

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
