"""Training that keeps less for backward (hrnet_fast.memory): memory="lean"
and "checkpoint" give eager's outputs, every gradient (parameters and the
input) and the running statistics, step after step, on every layout, while
the saved-for-backward bytes drop; and they keep to the rules of eager
autograd (in-place edits, determinism, double backward refused, outer
saved-tensor hooks)."""
from __future__ import annotations

import copy
from typing import Callable, Dict

import pytest
import torch
import torch.nn as nn

import hrnet_fast
from layouts import CHANNELS, LAYOUTS, SIZES, MMBackbone
from test_convert_common import as_list, freeze_batchnorm, loss_of, randomize_bn

timm = pytest.importorskip("timm")
MEMORY = ("lean", "checkpoint")


def _own(head: str, arch: str = "w18_small_v1") -> nn.Module:
    kw = {"num_classes": 3} if head == "seg" else {"num_joints": 3}
    return hrnet_fast.models.create(arch, head, **kw)


# Whole models (stem, layer1 Bottlenecks or BasicBlocks, transitions, stages,
# heads) and an input each: this package's seg / pose, timm's classifier and
# feature extractor, mmseg's backbone (its blocks add in place) at an odd size.
MODELS: Dict[str, Callable[[], nn.Module]] = {
    "own_seg": lambda: _own("seg"),
    "own_pose": lambda: _own("pose"),
    "timm_cls": lambda: timm.create_model("hrnet_w18_small", pretrained=False, num_classes=5),
    "timm_features": lambda: timm.create_model("hrnet_w18_small", pretrained=False, features_only=True),
    "mmseg_backbone": MMBackbone,
}
INPUTS = {"own_seg": (2, 3, 48, 80), "own_pose": (1, 3, 64, 64), "timm_cls": (2, 3, 64, 64),
          "timm_features": (2, 3, 64, 64), "mmseg_backbone": (2, 3, 45, 37)}
# timm's models are the slowest here: two steps of theirs, three of the rest.
STEPS = {"timm_cls": 2, "timm_features": 2}


def saved_mib(fn: Callable[[], object]):
    """fn()'s result and the MiB of the distinct storages saved for its
    backward."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values()) / 2 ** 20


def _assert_grads(ref: nn.Module, other: nn.Module, rtol: float, x=None, y=None):
    """Every gradient within `rtol` of its own largest element (of a
    thousandth of the model's largest for gradients that are zero but for
    rounding, as a conv bias before a BatchNorm has)."""
    theirs = dict(other.named_parameters())
    floor = 1e-3 * max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
    for name, p in ref.named_parameters():
        q = theirs[name]
        if p.grad is None:
            assert q.grad is None, name
            continue
        scale = max(float(p.grad.abs().max()), floor)
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=rtol * scale, msg=name)
    if x is not None:
        torch.testing.assert_close(y.grad, x.grad, rtol=0, atol=rtol * float(x.grad.abs().max()))


def _assert_state(ref: nn.Module, other: nn.Module, rtol: float):
    theirs = other.state_dict()
    for name, v in ref.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(theirs[name], v, rtol=rtol, atol=rtol * float(v.abs().max()), msg=name)
        else:
            assert torch.equal(theirs[name], v), name


def train_alike(ref: nn.Module, other: nn.Module, shape, steps: int = 3, rtol: float = 1e-10,
                dtype=torch.float64, memory_format=torch.contiguous_format, check_saved: bool = True):
    """`steps` SGD steps of both models on the same data: the same outputs,
    gradients (parameters and input) and buffers after every step, and (with
    `check_saved`) fewer bytes saved for backward by `other`."""
    opts = [torch.optim.SGD(m.parameters(), lr=1e-3) for m in (ref, other)]
    for step in range(steps):
        x = torch.randn(shape, dtype=dtype).to(memory_format=memory_format).requires_grad_()
        y = x.detach().clone().requires_grad_()
        for opt in opts:
            opt.zero_grad()
        a, eager_mib = saved_mib(lambda: ref(x))
        b, mib = saved_mib(lambda: other(y))
        for p, q in zip(as_list(a), as_list(b)):
            torch.testing.assert_close(q, p, rtol=rtol, atol=rtol * float(p.detach().abs().max()))
        if check_saved:
            assert mib < eager_mib, (mib, eager_mib)
        loss_of(a).backward()
        loss_of(b).backward()
        _assert_grads(ref, other, rtol * 10, x, y)
        for opt in opts:
            opt.step()
        _assert_state(ref, other, rtol)


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("model", list(MODELS))
def test_whole_models_train_as_eager(model, memory):
    torch.manual_seed(0)
    ref = randomize_bn(MODELS[model]()).double().train()
    other = hrnet_fast.convert(copy.deepcopy(ref), memory=memory)
    train_alike(ref, other, INPUTS[model], steps=STEPS.get(model, 3))


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_trains_as_eager(layout, memory):
    torch.manual_seed(0)
    ref = randomize_bn(LAYOUTS[layout](CHANNELS)).double().train()
    other = hrnet_fast.convert(copy.deepcopy(ref), memory=memory)
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES[layout])]
    ys = [x.clone().requires_grad_() for x in xs]
    xs = [x.requires_grad_() for x in xs]
    a, b = ref(list(xs)), other(list(ys))
    for p, q in zip(a, b):
        torch.testing.assert_close(q, p)
    loss_of(a).backward()
    loss_of(b).backward()
    _assert_grads(ref, other, 1e-9)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y.grad, x.grad, rtol=0, atol=1e-9 * float(x.grad.abs().max()))
    _assert_state(ref, other, 1e-10)


@pytest.mark.parametrize("memory", MEMORY)
def test_frozen_batchnorm_frozen_layers_batch_1_channels_last(memory):
    torch.manual_seed(0)
    ref = randomize_bn(_own("seg")).double()
    freeze_batchnorm(ref)
    for p in ref.layer1.parameters():  # a frozen part of the network
        p.requires_grad_(False)
    other = hrnet_fast.convert(copy.deepcopy(ref), memory=memory)
    train_alike(ref, other, (1, 3, 50, 66), steps=2, memory_format=torch.channels_last)


@pytest.mark.parametrize("memory", MEMORY)
def test_float32_and_autocast_bfloat16(memory):
    # float32 against eager within convert's own float32 tolerance. Under
    # bfloat16 autocast, where the order of roundings alone moves some
    # gradients by more than their size, against float64: its gradients are
    # as close to float64's as those of the converted model without memory=.
    torch.manual_seed(0)
    ref = randomize_bn(_own("seg")).train()
    train_alike(copy.deepcopy(ref), hrnet_fast.convert(copy.deepcopy(ref), memory=memory), (2, 3, 64, 64), steps=1,
                rtol=1e-4, dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64)
    truth = copy.deepcopy(ref).double()
    loss_of(truth(x.double())).backward()

    def error(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        assert out.dtype == torch.bfloat16
        loss_of(out.float()).backward()
        got = torch.cat([p.grad.double().flatten() for p in m.parameters()])
        want = torch.cat([p.grad.flatten() for p in truth.parameters()])
        return float((got - want).norm() / want.norm())

    plain = error(hrnet_fast.convert(copy.deepcopy(ref)))
    assert error(hrnet_fast.convert(copy.deepcopy(ref), memory=memory)) <= 1.5 * plain + 1e-3, plain


def test_lean_keeps_one_full_size_tensor_per_unit():
    # Eager keeps the BatchNorm input and the ReLU output of every conv ->
    # BN -> ReLU unit; lean keeps the first only (and nothing per exchange
    # output): the activations it keeps are the convolution outputs.
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18_small", pretrained=False, features_only=True).train()
    lean = hrnet_fast.convert(copy.deepcopy(ref), memory="lean")
    ckpt = hrnet_fast.convert(copy.deepcopy(ref), memory="checkpoint")
    x = torch.randn(2, 3, 128, 128)
    params = sum(p.numel() * p.element_size() for p in ref.parameters()) / 2 ** 20
    _, eager = saved_mib(lambda: ref(x))
    _, lean_mib = saved_mib(lambda: lean(x))
    _, ckpt_mib = saved_mib(lambda: ckpt(x))
    assert (lean_mib - params) < 0.6 * (eager - params), (lean_mib, eager, params)
    # checkpoint: the regions keep their inputs, and the last HRNet module
    # (here a third of the stages, one module each) runs lean
    assert ckpt_mib < lean_mib, (ckpt_mib, lean_mib)


def test_checkpoint_keeps_the_regions_inputs():
    # hrnet_w18 (eight HRNet modules): the modules, layer1 and the
    # transitions keep their inputs only, the last module the lean units'.
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18", pretrained=False, features_only=True).train()
    ckpt = hrnet_fast.convert(copy.deepcopy(ref), memory="checkpoint")
    x = torch.randn(2, 3, 64, 128)
    params = sum(p.numel() * p.element_size() for p in ref.parameters()) / 2 ** 20
    _, eager = saved_mib(lambda: ref(x))
    _, ckpt_mib = saved_mib(lambda: ckpt(x))
    assert (ckpt_mib - params) < 0.3 * (eager - params), (ckpt_mib, eager, params)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_convert_without_the_option_keeps_no_more_than_eager(memory_format):
    # The fused exchange keeps what its backward reads (never more than the
    # fuse layers it replaces), and its 1x1 products keep views of their
    # inputs, not copies: a converted model's saved bytes are at most eager's.
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18_small", pretrained=False, features_only=True).train()
    ref = ref.to(memory_format=memory_format)
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    x = torch.randn(2, 3, 96, 64).to(memory_format=memory_format)
    _, eager = saved_mib(lambda: ref(x))
    _, mib = saved_mib(lambda: fused(x))
    assert mib <= eager, (mib, eager)


def test_deterministic_and_no_double_backward():
    torch.manual_seed(0)
    model = hrnet_fast.convert(randomize_bn(_own("seg")).double(), memory="lean")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    grads = []
    for _ in range(2):
        model.zero_grad()
        loss_of(model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    for memory in MEMORY:
        hrnet_fast.convert(model, memory=memory)
        loss = loss_of(model(x.clone().requires_grad_()))
        with pytest.raises(RuntimeError, match="memory="):
            torch.autograd.grad(loss, list(model.parameters()), create_graph=True)


def test_inplace_edit_of_a_kept_tensor_raises_as_eager():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3)
    for memory in (None, "lean"):
        net = hrnet_fast.convert(nn.Sequential(conv, _own("pose")), memory=memory)
        x = torch.randn(1, 3, 66, 66, requires_grad=True)
        inner = x * 2  # saved by the conv that reads it
        out = net(inner)
        with torch.no_grad():
            inner.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


def test_outer_saved_tensor_hooks_see_what_is_kept():
    # A memory measurement (or torch.autograd.graph.save_on_cpu) around a
    # lean forward sees the tensors it keeps, once each, and gets them back.
    torch.manual_seed(0)
    ref = randomize_bn(_own("pose")).double()
    lean = hrnet_fast.convert(copy.deepcopy(ref), memory="lean")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.autograd.graph.save_on_cpu():
        a, b = ref(x), lean(x)
    loss_of(a).backward()
    loss_of(b).backward()
    _assert_grads(ref, lean, 1e-9)
    _, mib = saved_mib(lambda: lean(x))
    assert mib > 0


def test_compile_fullgraph_over_a_lean_model():
    torch._dynamo.reset()
    torch.manual_seed(0)
    ref = randomize_bn(_own("pose")).train()
    lean = hrnet_fast.convert(copy.deepcopy(ref), memory="lean")
    compiled = torch.compile(lean, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 64, 64)
    a, b = ref(x), compiled(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.detach().abs().max()))
    loss_of(a).backward()
    loss_of(b).backward()
    _assert_grads(ref, lean, 1e-4)


def test_bad_memory_argument():
    with pytest.raises(ValueError, match="memory"):
        hrnet_fast.convert(_own("pose"), memory="less")


def test_convert_again_sets_or_drops_the_memory_mode():
    m = hrnet_fast.convert(_own("pose"), memory="checkpoint")
    assert type(m.__dict__["forward"]).__name__ == "MemoryForward"
    regions = [mod for mod in m.modules() if type(mod.__dict__.get("forward")).__name__ == "RegionForward"]
    assert len(regions) >= len(hrnet_fast.fused_modules(m)) + 1  # modules, layer1, transitions
    hrnet_fast.convert(m)
    assert "forward" not in m.__dict__
    assert all(type(mod.__dict__.get("forward")).__name__ != "RegionForward" for mod in m.modules())
    assert len(hrnet_fast.fused_modules(m)) > 0


def test_lean_and_checkpoint_lower_the_step_peak():
    # What is kept must not come back all at once: recomputations chain
    # through at most recipes.MAX_DEPTH recipes, so the first unpack in
    # backward does not rebuild (and hold) nearly every activation, which
    # put lean's peak at 0.92x eager's here (0.55x bounded). Peaks without
    # the parameters' gradients, which every variant allocates alike.
    from hrnet_fast.bench.training_memory import peak_mib

    torch.manual_seed(0)
    ref = _own("pose", "w18").train()
    grads = sum(p.numel() * p.element_size() for p in ref.parameters()) / 2 ** 20
    x = torch.randn(2, 3, 256, 192)
    peaks = {}
    for memory in (None, "lean", "checkpoint"):
        m = ref if memory is None else hrnet_fast.convert(copy.deepcopy(ref), memory=memory)

        def step(m=m):
            loss_of(m(x)).backward()
            m.zero_grad(set_to_none=True)
        peaks[memory] = peak_mib(step, "cpu") - grads
    assert peaks["lean"] < 0.7 * peaks[None] and peaks["checkpoint"] < 0.8 * peaks[None], peaks


class _ResidualUnit(nn.Module):
    """conv -> BN -> add (in place) -> ReLU -> conv, as a BasicBlock ends."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.out = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y += x
        return self.out(torch.relu(y))


def test_lean_recomputes_a_unit_in_one_tensor():
    # Backward rebuilds relu(bn(c) + x) for the last conv: the affine
    # allocates one tensor and the add and the ReLU write over it (the
    # values nothing else reads), with eager's gradients.
    from torch.utils._python_dispatch import TorchDispatchMode

    from hrnet_fast.memory.mode import LeanMode
    from hrnet_fast.memory.recipes import Session

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    ref = randomize_bn(_ResidualUnit()).double()
    lean = copy.deepcopy(ref)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    with Session() as session, LeanMode(session):
        out = lean(x2 * 1.5)
    loss_of(ref(x * 1.5)).backward()
    with Ops() as ops:
        loss_of(out).backward()
    assert ops.seen.count("addcmul") == 1 and ops.seen.count("add_") == 1 and ops.seen.count("relu_") == 1, ops.seen
    assert "relu" not in ops.seen and "clamp_min" not in ops.seen, ops.seen
    _assert_grads(ref, lean, 1e-10, x, x2)


@pytest.mark.parametrize("memory", MEMORY)
def test_backward_twice_with_retain_graph(memory):
    # A retained graph unpacks every saved value again: the recomputation
    # (which writes over values only it reads) gives eager's gradients, and
    # the same ones the second time.
    torch.manual_seed(0)
    ref = randomize_bn(_own("pose")).double()
    model = hrnet_fast.convert(copy.deepcopy(ref), memory=memory)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    loss_of(ref(x)).backward()
    loss = loss_of(model(x))
    loss.backward(retain_graph=True)
    _assert_grads(ref, model, 1e-10)
    first = [p.grad.clone() for p in model.parameters()]
    loss.backward()
    assert all(torch.equal(p.grad, 2 * g) for p, g in zip(model.parameters(), first))
