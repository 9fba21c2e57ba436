"""The eval fast path: a converted module's exchange as one C++ call
(hrnet_fast.native_rows, csrc/rows_plan.cpp). Its outputs are the Python
rows' to the bit, it runs only while everything it was built for holds, and
whatever changes sends the call back to the general path, which agrees
with the unconverted model."""
from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

import hrnet_fast
from hrnet_fast import inference_rows
from hrnet_fast.backend.native import rows_plan
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.native_rows import CONV, EXCHANGE, run_rows

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="needs the C++ extension")

X = (1, 3, 64, 64)


def make(task: str = "pose", name: str = "w18_small_v2"):
    """An unconverted model in eval and a converted copy."""
    torch.manual_seed(0)
    ref = hrnet_fast.models.create(name, task)
    randomize_batchnorm(ref)
    ref.eval()
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    return ref, fused


def last_fuse_bn(model):
    """The BN of the last module's first up-branch (row 0 reading branch 1),
    in a converted or unconverted model alike."""
    hosts = [m for m in model.modules() if isinstance(getattr(m, "fuse_layers", None), torch.nn.ModuleList)]
    return hosts[-1].fuse_layers[0][1][1]


def exchanges(model):
    return [m.fused_exchange for m in hrnet_fast.fused_modules(model)]


class RowsRuns:
    """Counts runs of the rows from Python (InferenceRows.run)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = inference_rows.InferenceRows.run

        def counted(rows, *args, **kwargs):
            self.count += 1
            return original(rows, *args, **kwargs)

        monkeypatch.setattr(inference_rows.InferenceRows, "run", counted)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """float32 against the unconverted model: folding each BN into its conv
    and summing in another order move the last few bits of every term, so
    1e-4 of the output's scale; float64 cases use their own tolerance."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("task", ["pose", "seg"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("layout, grad_off", [("nchw", "no_grad"), ("channels_last", "inference_mode")])
def test_same_bits_as_the_rows_in_python(task, batch, layout, grad_off):
    ref, fused = make(task)
    in_python = copy.deepcopy(fused)
    for fx in exchanges(in_python):
        fx.one_call_eval = False
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    context = torch.no_grad if grad_off == "no_grad" else torch.inference_mode
    with context():
        x = torch.randn(batch, 3, 64, 64).to(memory_format=fmt)
        assert close(fused(x), ref(x))  # the first call compiles the rows
        assert all(fx.native_rows is not None for fx in exchanges(fused))
        assert all(fx.native_rows is None for fx in exchanges(in_python))
        for _ in range(2):
            x = torch.randn(batch, 3, 64, 64).to(memory_format=fmt)
            got, py = fused(x), in_python(x)
            assert torch.equal(got, py)
            assert close(got, ref(x))


def test_later_calls_do_not_run_the_rows_in_python(monkeypatch):
    _, fused = make()
    runs = RowsRuns(monkeypatch)
    with torch.no_grad():
        fused(torch.randn(X))
        first = runs.count
        assert first == len(exchanges(fused))
        fused(torch.randn(X))
        fused(torch.randn(X))
    assert runs.count == first


def test_inplace_bn_update_is_seen():
    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        for m in (ref, fused):
            bn = last_fuse_bn(m)
            bn.running_mean.add_(0.5)  # bumps the version counter
            bn.weight.mul_(1.5)
        assert close(fused(x), ref(x))
        assert close(fused(x), ref(x))


def test_hooks_fire_and_send_the_call_back(monkeypatch):
    ref, fused = make()
    seen = []
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        host = hrnet_fast.fused_modules(fused)[-1]
        conv = host.fuse_layers[0][1][0]
        handle = conv.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
        assert close(fused(x), ref(x))
        assert len(seen) == 1
        handle.remove()
        runs = RowsRuns(monkeypatch)
        assert close(fused(x), ref(x))
        assert len(seen) == 1 and runs.count == 0  # the one call again


def test_hooks_on_the_exchange_module_and_global_hooks_fire():
    ref, fused = make()
    calls = []
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        fx = exchanges(fused)[-1]
        handle = fx.register_forward_hook(lambda mod, inp, out: calls.append("own"))
        assert close(fused(x), ref(x))
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda mod, inp, out: calls.append("global") if mod is fx else None)
        try:
            assert close(fused(x), ref(x))
        finally:
            handle.remove()
        assert calls == ["own", "global"]


def test_a_hook_that_holds_the_model_does_not_keep_it_alive():
    # the plan's Python references travel in a tuple the collector sees
    _, fused = make()
    with torch.no_grad():
        fused(torch.randn(X))
        fused(torch.randn(X))
    last_fuse_bn(fused).register_forward_hook(lambda mod, inp, out, model=fused: None)
    gone = weakref.ref(fused)
    del fused
    gc.collect()
    assert gone() is None


def test_bn_in_training_mode_under_no_grad():
    # test-time adaptation: BN layers put back in training to update their
    # statistics while the model stays in eval and under no_grad
    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        fused(x)
        for m in (ref, fused):
            last_fuse_bn(m).train()
        assert close(fused(x), ref(x))
        bn_ref = last_fuse_bn(ref)
        bn_fused = last_fuse_bn(fused)
        assert torch.allclose(bn_fused.running_mean, bn_ref.running_mean)
        for m in (ref, fused):
            m.eval()
        assert close(fused(x), ref(x))


def test_grad_autocast_and_new_shapes_take_the_general_path():
    ref, fused = make()
    with torch.no_grad():
        fused(torch.randn(X))
    x = torch.randn(X, requires_grad=True)
    fused(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        for shape in [(2, 3, 64, 64), (1, 3, 96, 64), X]:
            x = torch.randn(shape)
            assert close(fused(x), ref(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = fused(x), ref(x)
        assert got.dtype == want.dtype == torch.bfloat16
        assert torch.allclose(got.float(), want.float(), rtol=0.1, atol=0.1 * float(want.abs().max()))
        x64 = torch.randn(X, dtype=torch.float64)
        assert torch.allclose(fused.double()(x64), ref.double()(x64), atol=1e-10)


def test_function_modes_and_tensor_subclasses_take_the_rows_in_python(monkeypatch):
    # both would see the Python rows' calls and not the C++ ones
    class Sub(torch.Tensor):
        pass

    class Seen(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        runs = RowsRuns(monkeypatch)
        with Seen():
            assert close(fused(x), ref(x))
        assert runs.count == len(exchanges(fused))
        got = fused(x.as_subclass(Sub))
        assert type(got) is Sub and close(got.as_subclass(torch.Tensor), ref(x))
        assert runs.count == 2 * len(exchanges(fused))
        fused(x)
        assert runs.count == 2 * len(exchanges(fused))


def test_backend_change_drops_the_plan():
    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        fx = exchanges(fused)[0]
        assert fx.native_rows is not None
        fx.backend = "reference"
        assert fx.native_rows is None
        assert close(fused(x), ref(x))
        fused(x)
        assert fx.native_rows is None  # reference rows stay in Python


def test_copies_trace_and_compile_after_the_plan_is_built():
    ref, fused = make()
    x = torch.randn(X)
    with torch.no_grad():
        fused(x)
        want = ref(x)
        for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
            assert all(fx.native_rows is None for fx in exchanges(clone))
            assert close(clone(x), want)
        traced = torch.jit.trace(fused, x)
        y = torch.randn(X)
        assert close(traced(y), ref(y))
        compiled = torch.compile(fused, fullgraph=True)
        assert close(compiled(y), ref(y))


def test_bad_inputs_return_none_and_a_bad_program_is_refused():
    _, fused = make()
    fx = exchanges(fused)[-1]
    seen = {}
    handle = fx.register_forward_pre_hook(lambda mod, inp: seen.setdefault("xs", list(inp[0])))
    with torch.no_grad():
        fused(torch.randn(X))
        handle.remove()
        fused(torch.randn(X))
        xs = seen["xs"]
        plan = fx.native_rows.state
        assert len(run_rows(plan, xs)) == len(fx.plan)
        assert run_rows(plan, xs[:2]) is None
        assert run_rows(plan, [t.double() for t in xs]) is None
        assert run_rows(plan, [t[..., :-1] for t in xs]) is None
        assert run_rows(plan, [t.to(memory_format=torch.channels_last) for t in xs]) is None
        assert run_rows(plan, [1, 2, 3, 4]) is None
        assert run_rows(plan, "not a list") is None
    assert run_rows(plan, xs) is None  # grad mode

    w = torch.randn(4, 4, 3, 3)
    like = [torch.randn(1, 4, 8, 8)]
    good = [CONV, 1, 0, 0, -1, 2, 2, 1, 1, 1, 1, 1, EXCHANGE, 1, 1, 4, 4]
    bad_register = [CONV, 9, 0, 0, -1, 2, 2, 1, 1, 1, 1, 1]
    bad_constant = [CONV, 1, 0, 3, -1, 2, 2, 1, 1, 1, 1, 1]
    truncated = [CONV, 1, 0, 0]
    args = ([], [], [], [], "nearest", False, True)
    with torch.no_grad():
        out = run_rows((rows_plan([w], good, 2, like, *args), (), (), RemovableHandle), like)
    assert torch.allclose(out[0], torch.relu(F.conv2d(like[0], w, stride=2, padding=1)))
    for program in (bad_register, bad_constant, truncated, [99]):
        with pytest.raises(RuntimeError, match="RowsPlan"):
            rows_plan([w], program, 2, like, *args)


def test_doctests():
    import doctest

    import hrnet_fast.native_rows as module
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
