"""The eval program of a converted module (hrnet_fast.plan): what it is
compiled to (merged first convs, folded weights), that it runs as one C++
call after its first run, that everything it rests on is watched (hooks, BN
modes and statistics, swapped or substituted parameters, moves, modes,
subclasses), and that whatever changes sends the call back to a path that
agrees with the unconverted model. That every path agrees with the
unconverted model on every layout is tests/test_agreement.py."""
from __future__ import annotations

import copy
import doctest
import gc
import importlib
import pickle
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import hrnet_fast
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.plan import executor, native
from hrnet_fast.plan.program import Conv, Exchange, Module, Program, Relu, Split
from test_convert_common import eval_matches, grad_modes_agree, pair, record_outputs

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
    hosts = [m for m in model.modules() if isinstance(getattr(m, "fuse_layers", None), nn.ModuleList)]
    return hosts[-1].fuse_layers[0][1][1]


def exchanges(model):
    return [m.fused_exchange for m in hrnet_fast.fused_modules(model)]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """float32 against the unconverted model: folding each BN into its conv
    and summing in another order move the last few bits of every term, so
    1e-4 of the output's scale; float64 cases use their own tolerance."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


class PythonRuns:
    """Counts runs of programs by the Python executor."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = executor.PythonExecutor.run

        def counted(ex, *args, **kwargs):
            self.count += 1
            return original(ex, *args, **kwargs)

        monkeypatch.setattr(executor.PythonExecutor, "run", counted)


# -- what it compiles to -----------------------------------------------------

def test_the_program_of_a_stage4_module():
    _, fused = make("seg", "w18_small_v2")
    with torch.no_grad():
        fused(torch.randn(X))
    fx = exchanges(fused)[-1]
    code = fx.program.code
    exchanges_ = [ins for ins in code if isinstance(ins, Exchange)]
    assert len(exchanges_) == len(fx.terms) == 4
    # every BN folded: no affine reaches the op, no summand runs as a module
    assert all(ins.shifts is None and not ins.convs for ins in exchanges_)
    assert not any(isinstance(ins, Module) for ins in code)
    # batch 1, NCHW: the first convs reading one branch are one conv, split
    splits = [ins for ins in code if isinstance(ins, Split)]
    assert len(splits) == 4  # branches 0-2 feed stride-2 chains, 1-3 feed 1x1 convs: 3 + 3 - 2 single ones
    assert {ins.engine for ins in code if isinstance(ins, Conv)} == {"aten", "gemm"}
    # a Relu for each merged first link whose chain goes on
    assert sum(isinstance(ins, Relu) for ins in code) > 0
    assert fx.one_call is not None


def test_channels_last_sources_do_not_merge():
    ref, fused = make("seg")
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert close(fused(x), ref(x))
    assert all(not any(isinstance(ins, Split) for ins in fx.program.code) for fx in exchanges(fused))


def test_later_calls_do_not_run_the_program_in_python(monkeypatch):
    _, fused = make()
    runs = PythonRuns(monkeypatch)
    with torch.no_grad():
        fused(torch.randn(X))
        first = runs.count
        assert first == len(exchanges(fused))
        fused(torch.randn(X))
        fused(torch.randn(X))
    assert runs.count == first


def test_python_and_cpp_executors_give_the_same_bits():
    _, fused = make("seg")
    in_python = copy.deepcopy(fused)
    for fx in exchanges(in_python):
        fx.one_call_eval = False
    for fmt in (torch.contiguous_format, torch.channels_last):
        with torch.inference_mode():
            for _ in range(3):
                x = torch.randn(2, 3, 64, 64).to(memory_format=fmt)
                assert torch.equal(fused(x), in_python(x))
    assert all(fx.one_call is not None for fx in exchanges(fused))
    assert all(fx.one_call is None for fx in exchanges(in_python))


# -- what it rests on ----------------------------------------------------------

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


def test_swapped_parameters_moves_and_merged_weights_are_seen():
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    x = torch.randn(X, dtype=torch.float64)
    eval_matches(ref, fused, x)
    eval_matches(ref, fused, x)  # the program of this signature, stacked weights included
    hosts = [[m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 4][0] for model in (ref, fused)]
    for h in hosts:
        with torch.no_grad():
            h.fuse_layers[2][0][0][1].running_var.mul_(2.5)  # a merged down first link
            h.fuse_layers[0][3][0].weight.mul_(-1.0)  # a merged up conv
    eval_matches(ref, fused, x)
    new = torch.randn_like(hosts[0].fuse_layers[0][1][0].weight)
    for h in hosts:
        h.fuse_layers[0][1][0].weight = nn.Parameter(new.clone())  # a swapped tensor, same module
    eval_matches(ref, fused, x)
    ref.float()
    fused.float()
    with torch.no_grad():
        a, b = ref(x.float()), fused(x.float())
    assert b.dtype == torch.float32 and close(b, a)


@pytest.mark.parametrize("mode", ["eval", "eval_twice", "train"])
def test_functional_call_computes_with_the_parameters_it_is_given(mode):
    # torch.func.functional_call swaps the modules' tensors in their dicts
    # (no registration hook fires): folds, the program and its C++ form
    # must read what the call sees, not what they were built from.
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    params = {k: (v * 1.5 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    ref.train(mode == "train")
    fused.train(mode == "train")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        fused(x)
        if mode == "eval_twice":
            fused(x)  # the C++ form exists now
        want = torch.func.functional_call(copy.deepcopy(ref), params, (x,))
        got = torch.func.functional_call(fused, params, (x,))
        torch.testing.assert_close(got, want)
        # and afterwards the model's own parameters again
        if mode != "train":
            torch.testing.assert_close(fused(x), ref(x))


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
        assert any(isinstance(ins, Module) for ins in exchanges(fused)[-1].program.code)
        handle.remove()
        runs = PythonRuns(monkeypatch)
        assert close(fused(x), ref(x))
        fused(x)
        assert len(seen) == 1 and runs.count == 1  # compiled again once, then the one call


def test_hooked_summands_see_what_they_saw_unconverted():
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    seen = record_outputs({name: [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 4][0]
                           .fuse_layers[3][0][0][0] for name, model in (("ref", ref), ("fused", fused))})
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))
    assert set(seen) == {"ref", "fused"}
    torch.testing.assert_close(seen["fused"], seen["ref"], rtol=1e-12, atol=1e-12)


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
    # the program's Python references travel in a tuple the collector sees
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
        assert torch.allclose(last_fuse_bn(fused).running_mean, last_fuse_bn(ref).running_mean)
        for m in (ref, fused):
            m.eval()
        assert close(fused(x), ref(x))


def test_a_training_forward_and_data_edits_refresh_what_was_folded():
    # A training-mode forward updates the running statistics inside the
    # batch-norm kernel without bumping their version counters (the BN's
    # num_batches_tracked shows it); `.data` edits are seen by nothing, and
    # converting again (documented) drops what was derived.
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    for batch in (1, 2):
        x = torch.randn(batch, 3, 64, 64, dtype=torch.float64)
        eval_matches(ref, fused, x)
        shifted = torch.randn(2, 3, 64, 64, dtype=torch.float64) * 3.0 + 1.0
        for model in (ref, fused):
            model.train()
            with torch.no_grad():
                model(shifted)
        eval_matches(ref, fused, x)
        for model in (ref, fused):
            host = [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 4][0]
            host.fuse_layers[3][0][0][0].weight.data.mul_(-0.5)  # a merged first link at batch 1
            host.fuse_layers[0][2][1].running_mean.data.add_(1.0)
        hrnet_fast.convert(fused)
        eval_matches(ref, fused, x)


def test_modes_shapes_and_dtypes_take_their_own_path():
    ref, fused = make()
    grad_modes_agree(copy.deepcopy(ref).double(), copy.deepcopy(fused).double(), torch.randn(X, dtype=torch.float64))
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


def test_function_modes_and_tensor_subclasses_take_the_python_executor(monkeypatch):
    # both would see the Python executor's calls and not the C++ ones
    class Sub(torch.Tensor):
        pass

    class Seen(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        runs = PythonRuns(monkeypatch)
        with Seen():
            assert close(fused(x), ref(x))
        assert runs.count == len(exchanges(fused))
        got = fused(x.as_subclass(Sub))
        assert type(got) is Sub and close(got.as_subclass(torch.Tensor), ref(x))
        assert runs.count == 2 * len(exchanges(fused))
        fused(x)
        assert runs.count == 2 * len(exchanges(fused))


def test_backend_change_drops_the_program():
    ref, fused = make()
    with torch.no_grad():
        x = torch.randn(X)
        fused(x)
        fx = exchanges(fused)[0]
        assert fx.one_call is not None
        fx.backend = "reference"
        assert fx.one_call is None
        assert close(fused(x), ref(x))
        fused(x)
        assert fx.program is not None and fx.one_call is None  # reference rows stay in Python


def test_copies_trace_and_compile_after_the_program_is_built():
    ref, fused = make()
    x = torch.randn(X)
    with torch.no_grad():
        fused(x)
        want = ref(x)
        for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
            assert all(fx.one_call is None for fx in exchanges(clone))
            assert close(clone(x), want)
        traced = torch.jit.trace(fused, x)
        y = torch.randn(X)
        assert close(traced(y), ref(y))
        compiled = torch.compile(fused, fullgraph=True)
        assert close(compiled(y), ref(y))


def test_inference_mode_then_no_grad_then_grad():
    # stacked weights and folds made under inference_mode must not leak
    # into calls outside it (inference tensors cannot be saved for backward)
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "pose"))
    grad_modes_agree(ref, fused, torch.randn(X, dtype=torch.float64))


# -- the C++ executor's own checks -------------------------------------------

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
        state = fx.one_call
        assert len(native.run(state, xs)) == len(fx.terms)
        assert native.run(state, xs[:2]) is None
        assert native.run(state, [t.double() for t in xs]) is None
        assert native.run(state, [t[..., :-1] for t in xs]) is None
        assert native.run(state, [t.to(memory_format=torch.channels_last) for t in xs]) is None
        assert native.run(state, [1, 2, 3, 4]) is None
        assert native.run(state, "not a list") is None
    assert native.run(state, xs) is None  # grad mode

    w = torch.randn(4, 4, 3, 3)
    like = [torch.randn(1, 4, 8, 8)]
    conv = [native.CONV, 1, 0, 0, -1, 0, 1, 2, 2, 1, 1, 1, 1, 1]
    good = conv + [native.EXCHANGE, 1, 1, -1, 4, 4, 0, 0, 1]
    bad_register = [native.CONV, 9, 0, 0, -1, 0, 1, 2, 2, 1, 1, 1, 1, 1]
    bad_constant = [native.CONV, 1, 0, 3, -1, 0, 1, 2, 2, 1, 1, 1, 1, 1]
    bad_engine = [native.CONV, 1, 0, 0, -1, 7, 1, 2, 2, 1, 1, 1, 1, 1]
    truncated = [native.CONV, 1, 0, 0]
    with torch.no_grad():
        built = native.build([w], good, 2, like, [], [], [])
        out = native.run((built, (), (), (), torch.utils.hooks.RemovableHandle), like)
    assert torch.allclose(out[0], torch.relu(F.conv2d(like[0], w, stride=2, padding=1)))
    for program in (bad_register, bad_constant, bad_engine, truncated, [99]):
        with pytest.raises(RuntimeError, match="plan"):
            native.build([w], program, 2, like, [], [], [])


def test_programs_the_cpp_executor_cannot_state_stay_in_python():
    # a summand that runs as a module, and conv terms the op computes itself
    w = torch.randn(4, 4, 3, 3)
    x, a = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 16, 16)
    module = Program((Module(2, 1, nn.Conv2d(4, 4, 3, 2, 1), (1, 4, 8, 8), True, "m", 0, 1),
                      Exchange((0, 2), None, (), (8, 8), "nearest", False, True, "auto")), 3, 2)
    conv_term = Program((Exchange((0,), None, ((1, w, None),), (8, 8), "nearest", False, False, "reference"),), 2, 2)
    for program in (module, conv_term):
        ex = executor.PythonExecutor(program)
        with torch.no_grad():
            ex.run([x, a])
            assert native.encode(ex, [x, a]) is None


def test_doctests():
    for name in ("guard", "program", "executor", "engines", "native", "cache"):
        module = importlib.import_module(f"hrnet_fast.plan.{name}")
        result = doctest.testmod(module, verbose=False)
        assert result.attempted > 0 and result.failed == 0, name


@pytest.mark.parametrize("path", ["python", "native", "optimize"])
def test_nan_reaches_the_outputs_as_in_eager(path):
    # A fused ReLU may map NaN to 0 (oneDNN's does): every engine the program
    # runs keeps NaN where the unconverted module's outputs have it.
    from hrnet_fast.optimize.graph import Builder
    from hrnet_fast.optimize.report import Report
    from hrnet_fast.optimize.settings import resolve
    from layouts import CHANNELS, LAYOUTS, SIZES

    torch.manual_seed(0)
    ref = LAYOUTS["mmpose"](CHANNELS).eval()
    randomize_batchnorm(ref)
    if path == "optimize":
        run = Builder(resolve(ref, None, None, None, None, "auto"), Report("", "", "", False, False)).build(
            copy.deepcopy(ref))
        fmt = torch.channels_last
    else:
        run = hrnet_fast.convert(copy.deepcopy(ref))
        hrnet_fast.fused_modules(run)[0].fused_exchange.one_call_eval = path == "native"
        fmt = torch.contiguous_format
    for _ in range(2):
        xs = [torch.randn(1, c, h, w).to(memory_format=fmt) for c, (h, w) in zip(CHANNELS, SIZES["mmpose"])]
        xs[0][0, :, 1, 1] = float("nan")
        with torch.no_grad():
            want, got = ref([x.clone() for x in xs]), run([x.clone() for x in xs])
        for w, g in zip(want, got):
            assert w.isnan().any() and torch.equal(g.isnan(), w.isnan())
