"""Lite-HRNet (mmpose's LiteHRNet backbone, replicated in layouts.py): its
LiteHRModules convert, and the converted model computes what the source
computes -- its exchange doubles row 0 in place and feeds that sum, before
its ReLU, to every later row twice (hrnet_fast.convert.layouts) -- in
training (float64 SGD steps: outputs, gradients, running statistics), eval,
no_grad, inference_mode and channels_last, with the same state_dict keys."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import hrnet_fast
from hrnet_fast.convert.layouts import is_hr_module
from layouts import CHANNELS, LITE_EXTRA, SIZES, LiteHRModule, LiteHRNet, lite_module
from test_convert_common import loss_of, randomize_bn

# The registry's configuration with every stage NAIVE, one module each, no head.
EXTRA_NAIVE = {**LITE_EXTRA, "with_head": False,
               "stages_spec": {**LITE_EXTRA["stages_spec"], "num_modules": (1, 1, 1),
                               "module_type": ("NAIVE", "NAIVE", "NAIVE")}}


def _model(extra=None, train: bool = True) -> nn.Module:
    torch.manual_seed(0)
    m = LiteHRNet() if extra is None else LiteHRNet(extra)
    m.train(train)  # mmpose's LiteHRNet.train returns None: never chained
    return randomize_bn(m).double()


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-300) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


def _assert_rel(got: torch.Tensor, want: torch.Tensor, what: str, tol: float = 1e-10, floor: float = 1e-300) -> None:
    """`got` within `tol` of `want`, relative to want's largest entry (or to
    `floor`: the gradient of a BN bias that another training BN follows is
    zero, and both sides hold rounding noise there)."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    assert _rel(got, want, floor) <= tol, f"{what}: {_rel(got, want, floor):.3g} relative"


def _textbook(m: LiteHRModule, xs):
    """HRNet's exchange over the same layers: what a converter that ignored
    Lite-HRNet's in-place row 0 would compute."""
    out = m.layers(xs) if m.module_type == "LITE" else [f(x) for f, x in zip(m.layers, xs)]
    return [torch.relu(sum(out[j] if i == j else m.fuse_layers[i][j](out[j]) for j in range(m.num_branches)))
            for i in range(len(m.fuse_layers))]


def test_every_lite_module_converts_and_keeps_its_state_dict():
    ref = _model()
    keys = list(ref.state_dict())
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    hosts = [m for m in fused.modules() if isinstance(m, LiteHRModule)]
    assert len(hosts) == 4 and hrnet_fast.fused_modules(fused) == hosts
    assert list(fused.state_dict()) == keys
    # every module as it was, and one FusedExchange (no parameters) per LiteHRModule
    names = [n for n, _ in fused.named_modules()]
    assert [n for n in names if not n.endswith("fused_exchange")] == [n for n, _ in ref.named_modules()]
    assert all(type(h.__dict__["branches"]).__name__ == "LiteBranchStep" for h in hosts)
    # the rows: relu(s_0); later rows: two summands of fuse_layers[i][0](s_0), x_i, finer chains, folded up terms
    fx = hosts[-1].fused_exchange
    assert [[t.kind for t in row] for row in fx.terms] == [
        ["id"], ["id", "id", "id", "up", "up"], ["id", "id", "id", "id", "up"], ["id", "id", "id", "id", "id"]]
    fused.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("extra", [None, EXTRA_NAIVE], ids=["lite_naive_mixed", "naive"])
def test_training_matches_eager_in_float64(extra):
    ref = _model(extra)
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    ref.train()
    fused.train()
    # A gentle step: at lr 0.05 with momentum this small, randomly initialised
    # net amplifies a 1e-15 relative change of its parameters, in eager against
    # itself, to 2e-8 relative in the gradients by the fourth step.
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.01)
    opt_f = torch.optim.SGD(fused.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=g)
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = ref(xr), fused(xf)
        for p, q in zip(a, b):
            _assert_rel(q, p, f"step {step} output")
        opt_r.zero_grad()
        opt_f.zero_grad()
        loss_of(a).backward()
        loss_of(b).backward()
        _assert_rel(xf.grad, xr.grad, f"step {step} input grad")
        scale = max(float(p.grad.abs().max()) for p in ref.parameters() if p.grad is not None)
        for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
            if p.grad is None:  # without the head, the coarser outputs of the last stage are not used
                assert q.grad is None, name
                continue
            _assert_rel(q.grad, p.grad, f"step {step} {name}.grad", floor=1e-4 * scale)
        opt_r.step()
        opt_f.step()
        for (name, p), q in zip(ref.state_dict().items(), fused.state_dict().values()):
            if p.dtype == torch.int64:
                assert torch.equal(q, p), name  # num_batches_tracked: twice for the chains run twice
            else:
                _assert_rel(q, p, f"step {step} {name}")


@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("ctx", ["eval_grad", "no_grad", "inference_mode"])
def test_eval_modes_match_eager(ctx, fmt):
    ref = _model(train=False)
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    context = {"eval_grad": torch.enable_grad, "no_grad": torch.no_grad,
               "inference_mode": torch.inference_mode}[ctx]
    for call in range(2):  # the second call runs the programs the first compiled
        x = torch.randn(2, 3, 32, 32, dtype=torch.float64).to(memory_format=memory_format)
        with context():
            a, b = ref(x), fused(x)
        for p, q in zip(a, b):
            _assert_rel(q, p, f"call {call}", 1e-12)
    if ctx != "eval_grad":
        assert all(m.fused_exchange.program is not None for m in hrnet_fast.fused_modules(fused))


@pytest.mark.parametrize("module_type", ["LITE", "NAIVE"])
def test_one_module_sums_as_the_source_not_as_hrnet(module_type):
    torch.manual_seed(0)
    ref = randomize_bn(lite_module(CHANNELS, module_type)).double().eval()
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES["lite"])]
    with torch.no_grad():
        want, got, hrnet = ref([x.clone() for x in xs]), fused([x.clone() for x in xs]), _textbook(ref, xs)
    for i, (p, q, h) in enumerate(zip(want, got, hrnet)):
        _assert_rel(q, p, f"row {i}", 1e-12)
        assert _rel(h, p) > 1e-3, f"row {i}: the textbook exchange would pass too"


def test_naive_caller_list_sees_what_it_sees_unconverted():
    # "NAIVE" writes the branch outputs back into the caller's list, and row 0's
    # sum is then made in place in the first of them.
    torch.manual_seed(0)
    ref = randomize_bn(lite_module(CHANNELS, "NAIVE")).double().eval()
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES["lite"])]
    mine, theirs = [x.clone() for x in xs], [x.clone() for x in xs]
    with torch.no_grad():
        ref(theirs)
        fused(mine)
    for k, (p, q) in enumerate(zip(theirs, mine)):
        _assert_rel(q, p, f"caller's list [{k}]", 1e-12)
    # "LITE" leaves the caller's list alone
    lite = hrnet_fast.convert(randomize_bn(lite_module(CHANNELS, "LITE")).double())
    mine = [x.clone() for x in xs]
    lite(mine)
    assert all(torch.equal(p, q) for p, q in zip(mine, xs))


def test_single_output_one_branch_and_without_fuse():
    torch.manual_seed(0)
    single = randomize_bn(lite_module(CHANNELS, "LITE", multiscale_output=False)).double().train()
    fused = hrnet_fast.convert(copy.deepcopy(single))
    assert [[t.kind for t in row] for row in hrnet_fast.fused_modules(fused)[0].fused_exchange.terms] == [["id"]]
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES["lite"])]
    xr = [x.clone().requires_grad_() for x in xs]
    xf = [x.clone().requires_grad_() for x in xs]
    a, b = single(list(xr)), fused(list(xf))
    assert len(a) == len(b) == 1
    _assert_rel(b[0], a[0], "output")
    loss_of(a).backward()
    loss_of(b).backward()
    for k, (p, q) in enumerate(zip(xr, xf)):
        _assert_rel(q.grad, p.grad, f"grad {k}")
    for (name, p), q in zip(single.state_dict().items(), fused.state_dict().values()):
        assert torch.allclose(q, p, rtol=1e-12, atol=0), name
    # no exchange: one branch, or with_fuse=False -- left alone
    for m in (LiteHRModule(1, 1, [8], 8, "NAIVE", with_fuse=True),
              LiteHRModule(2, 1, [8, 16], 8, "LITE", multiscale_output=True, with_fuse=False)):
        assert not is_hr_module(m)
        with pytest.raises(ValueError, match="contains no HRNet module"):
            hrnet_fast.convert(m)
    net = LiteHRNet(dict(EXTRA_NAIVE, stages_spec=dict(EXTRA_NAIVE["stages_spec"], with_fuse=(False, True, False))))
    assert len(hrnet_fast.fused_modules(hrnet_fast.convert(net))) == 1


class _TrainReturnsSelf(LiteHRNet):
    def train(self, mode=True):
        super().train(mode)
        return self


def test_optimize_runs_lite_modules_as_they_are():
    torch.manual_seed(0)
    ref = randomize_bn(_TrainReturnsSelf()).double().eval()
    opt = hrnet_fast.optimize(ref, torch.randn(1, 3, 64, 64, dtype=torch.float64))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        _assert_rel(opt(x)[0], ref(x)[0], "optimize", 1e-10)
    assert sum("exchange not fused" in line and "Lite-HRNet" in line for line in opt.report.unrecognised) == 4


def test_optimize_takes_a_model_whose_train_returns_none():
    hrnet_fast.optimize(_model(train=False), torch.randn(1, 3, 64, 64, dtype=torch.float64))


def test_fuse_layer_hooks_fire_as_unconverted():
    # fuse_layers[i][0] runs twice per later row; row 0's up layers run in the
    # branch step; a hooked up term of a later row runs as its layer.
    torch.manual_seed(0)
    ref = randomize_bn(lite_module(CHANNELS, "LITE")).double().train()
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    seen = {id(ref): [], id(fused): []}
    for m in (ref, fused):
        for i, j in ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)):
            m.fuse_layers[i][j].register_forward_hook(
                lambda mod, args, out, m=m, i=i, j=j: seen[id(m)].append((i, j, out.shape, float(out.detach().sum()))))
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES["lite"])]
    a, b = ref([x.clone() for x in xs]), fused([x.clone() for x in xs])
    for p, q in zip(a, b):
        _assert_rel(q, p, "output")
    assert sorted(seen[id(fused)]) == sorted(seen[id(ref)])  # the call order differs, not the calls
    assert sum(1 for c in seen[id(ref)] if c[:2] == (1, 0)) == 2


def test_deepcopy_and_pickle_keep_the_branch_step_with_its_module():
    import io
    torch.manual_seed(0)
    fused = hrnet_fast.convert(randomize_bn(lite_module(CHANNELS, "NAIVE")).double().eval())
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, SIZES["lite"])]
    with torch.no_grad():
        want = fused([x.clone() for x in xs])
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    for twin in (copy.deepcopy(fused), torch.load(buf, weights_only=False)):
        assert twin.__dict__["branches"].host is twin
        assert hrnet_fast.fused_modules(twin) == [twin]
        with torch.no_grad():
            for p, q in zip(want, twin([x.clone() for x in xs])):
                assert torch.equal(p, q)
