"""convert() on timm HRNets: equivalence in eval and train, API contract
(state_dict, type, idempotence, errors), copies, and execution modes."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

import hrnet_fast
from test_convert_common import (assert_same_state, eval_matches, grad_modes_agree, loss_of, pair,
                                 randomize_bn, record_outputs, train_step_matches)

timm = pytest.importorskip("timm")

X = (2, 3, 64, 64)  # smallest size whose branches all divide evenly (stride 32)


def timm_features(name: str) -> nn.Module:
    # features_only returns every branch of stage 4, so all exchange rows
    # are compared, not just what the classifier head looks at.
    return timm.create_model(name, pretrained=False, features_only=True)


@pytest.mark.parametrize("name", ["hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18"])
def test_timm_eval_matches(name):
    ref, fused = pair(timm_features(name))
    assert len(hrnet_fast.fused_modules(fused)) > 0
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))


def test_timm_w32_eval_matches():
    # the big width: eval only, one small image (keeps CI fast)
    ref, fused = pair(timm_features("hrnet_w32"))
    assert len(hrnet_fast.fused_modules(fused)) == 8
    eval_matches(ref, fused, torch.randn(1, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize("name", ["hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18"])
def test_timm_train_matches(name):
    ref, fused = pair(timm_features(name))
    train_step_matches(ref, fused, torch.randn(X, dtype=torch.float64))


@pytest.mark.parametrize("name", ["hrnet_w18_small", "hrnet_w18_small_v2"])
def test_timm_train_matches_with_batch_stats_in_op(name):
    # the alternative training path: statistics computed by FusedExchange,
    # affine applied inside the op
    ref, fused = pair(timm_features(name))
    for m in hrnet_fast.fused_modules(fused):
        m.fused_exchange.batch_stats_in_op = True
    x = torch.randn(X, dtype=torch.float64)
    train_step_matches(ref, fused, x)
    for m in (ref, fused):
        m.zero_grad()
    train_step_matches(ref, fused, x)  # second step: num_batches_tracked, running buffers move on


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_backends_match(backend):
    ref, fused = pair(timm_features("hrnet_w18_small"), backend=backend)
    assert {m.fused_exchange.backend for m in hrnet_fast.fused_modules(fused)} == {backend}
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))
    train_step_matches(ref, fused, torch.randn(X, dtype=torch.float64))


def test_classifier_model_float32():
    ref, fused = pair(timm.create_model("hrnet_w18_small", pretrained=False, num_classes=7), dtype=torch.float32)
    eval_matches(ref, fused, torch.randn(1, 3, 64, 96), atol=1e-4, rtol=1e-4)


def test_state_dict_type_and_no_own_parameters():
    model = randomize_bn(timm_features("hrnet_w18_small"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cls = type(model)
    out = hrnet_fast.convert(model)
    assert out is model and type(model) is cls
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    for m in hrnet_fast.fused_modules(model):
        assert isinstance(m.fused_exchange, hrnet_fast.FusedExchange)
        assert list(m.fused_exchange.parameters()) == [] and list(m.fused_exchange.buffers()) == []
        assert type(m).__name__ == "HighResolutionModule"
    # parameters are not registered twice
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})


def test_checkpoint_round_trip():
    ref, fused = pair(timm_features("hrnet_w18_small"))
    plain = timm_features("hrnet_w18_small").double()
    fresh_fused = hrnet_fast.convert(timm_features("hrnet_w18_small").double())
    fresh_fused.load_state_dict(ref.state_dict())  # plain checkpoint -> converted
    plain.load_state_dict(fused.state_dict())  # converted checkpoint -> plain
    x = torch.randn(X, dtype=torch.float64)
    eval_matches(ref, fresh_fused, x)
    eval_matches(ref, plain, x)


def test_nothing_to_convert():
    with pytest.raises(ValueError, match="nothing to convert"):
        hrnet_fast.convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()))
    assert hrnet_fast.fused_modules(nn.Conv2d(3, 3, 1)) == []


def test_convert_twice_changes_nothing():
    ref, fused = pair(timm_features("hrnet_w18_small"))
    mods = hrnet_fast.fused_modules(fused)
    state = [(m.fused_exchange, m.forward) for m in mods]
    keys = list(fused.state_dict())
    assert hrnet_fast.convert(fused, backend="reference", mode="bilinear") is fused
    assert hrnet_fast.fused_modules(fused) == mods
    assert [(m.fused_exchange, m.forward) for m in mods] == state
    assert mods[0].fused_exchange.backend == "auto" and mods[0].fused_exchange.mode == "nearest"
    assert list(fused.state_dict()) == keys
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))


def test_mode_conflicting_with_upsample_children_is_an_error():
    with pytest.raises(ValueError, match="conflicts"):
        hrnet_fast.convert(timm_features("hrnet_w18_small"), mode="bilinear")


def test_deepcopy_and_pickle():
    ref, fused = pair(timm_features("hrnet_w18_small"))
    x = torch.randn(X, dtype=torch.float64)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        mods = hrnet_fast.fused_modules(clone)
        assert len(mods) == len(hrnet_fast.fused_modules(fused))
        for m in mods:  # each copy drives its own layers, not the original's
            assert m.fused_exchange.host is m and m.forward.host is m
        eval_matches(ref, clone, x)
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    eval_matches(ref, torch.load(buf, weights_only=False), x)


def test_non_divisible_size_fails_like_unconverted():
    # 72x56 -> branches 18x14, 9x7, 5x4, 3x2: nearest x2 of 5x4 is 10x8, not
    # 9x7, so timm's sum fails; the converted model must fail the same way.
    ref, fused = pair(timm_features("hrnet_w18_small"))
    x = torch.randn(1, 3, 72, 56, dtype=torch.float64)
    for m in (ref, fused):
        m.eval()
        with pytest.raises(RuntimeError, match="must match the size"):
            m(x)


def test_no_grad_and_inference_mode():
    ref, fused = pair(timm_features("hrnet_w18_small"))
    grad_modes_agree(ref, fused, torch.randn(X, dtype=torch.float64))


def _close_scaled(got, want, tol):
    # float32 through an untrained deep net: compare against the magnitude
    # of the tensor, not element-wise (tiny elements carry large relative noise)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= tol * want.abs().max()


def test_channels_last():
    ref, fused = pair(timm_features("hrnet_w18_small"), dtype=torch.float32)
    ref = ref.to(memory_format=torch.channels_last)
    fused = fused.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64).to(memory_format=torch.channels_last)
    ref.eval()
    fused.eval()
    with torch.no_grad():
        a, b = ref(x), fused(x)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in b)
    for p, q in zip(a, b):
        _close_scaled(q, p, 1e-5)
    ref.train()
    fused.train()
    a, b = ref(x), fused(x)
    for p, q in zip(a, b):  # batch statistics over few pixels: less well conditioned
        _close_scaled(q, p, 1e-4)
    loss_of(a).backward()
    loss_of(b).backward()
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        _close_scaled(q.grad, p.grad, 1e-3)
    for (name, p), q in zip(ref.state_dict().items(), fused.state_dict().values()):
        _close_scaled(q.float(), p.float(), 1e-5)


def _rel_err(t, ref):
    return ((t.float() - ref).norm() / ref.norm()).item()


def test_autocast_bfloat16():
    # bf16 rounding differs between any two summation orders, so compare the
    # converted model's error against float32 with the unconverted one's.
    ref, fused = pair(timm_features("hrnet_w18_small"), dtype=torch.float32)
    ref.eval()
    fused.eval()
    x = torch.randn(X)
    with torch.no_grad():
        exact = ref(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = ref(x), fused(x)
    assert [t.dtype for t in a] == [t.dtype for t in b]
    for e, p, q in zip(exact, a, b):
        assert _rel_err(q, e) <= 2 * _rel_err(p, e) + 1e-3
    # the exchange fed float32 under autocast: the float32 identity plus a
    # bf16 conv term promotes to float32, as the unconverted sum does
    host = hrnet_fast.fused_modules(fused)[0]
    xs = [torch.randn(1, 16, 16, 16), torch.randn(1, 32, 8, 8)]
    with torch.no_grad():
        exact = torch.relu(xs[0] + host.fuse_layers[0][1](xs[1]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = torch.relu(xs[0] + host.fuse_layers[0][1](xs[1]))
            got = host.fused_exchange(xs)[0]
    assert plain.dtype == got.dtype == torch.float32
    assert _rel_err(got, exact) <= 2 * _rel_err(plain, exact) + 1e-3


def test_train_step_with_optimizer_then_eval():
    # running buffers and weights move during training; the eval fold must
    # follow them (no stale cache)
    ref, fused = pair(timm_features("hrnet_w18_small"))
    x = torch.randn(X, dtype=torch.float64)
    eval_matches(ref, fused, x)  # fills the fold cache
    for model in (ref, fused):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        loss_of(model(x.clone())).backward()
        opt.step()
    assert_same_state(ref, fused, atol=1e-8, rtol=1e-6)
    eval_matches(ref, fused, x, atol=1e-8, rtol=1e-6)


def test_up_convs_run_as_gemm_unless_hooked():
    # The plain 1x1 UP convs run as a GEMM (hrnet_fast.pointwise); in
    # training a conv with hooks is still called as a module, so its hooks
    # fire and see the same tensors as in the unconverted model.
    ref, fused = pair(timm_features("hrnet_w18_small"))
    up_terms = [t for m in hrnet_fast.fused_modules(fused) for row in m.fused_exchange.terms for t in row
                if t.kind == "up"]
    assert up_terms and all(t.pointwise for t in up_terms)
    seen = record_outputs({"ref": ref.stage2[0].fuse_layers[0][1][0], "fused": fused.stage2[0].fuse_layers[0][1][0]})
    train_step_matches(ref, fused, torch.randn(X, dtype=torch.float64))
    assert set(seen) == {"ref", "fused"}
    torch.testing.assert_close(seen["fused"], seen["ref"], rtol=0, atol=0)


# -- what users hit (issue 24) ---------------------------------------------------

def _module(dtype=torch.float64):
    """A 3-branch timm HighResolutionModule and a converted copy."""
    from layouts import CHANNELS, LAYOUTS

    torch.manual_seed(0)
    ref = randomize_bn(LAYOUTS["timm"](CHANNELS)).to(dtype)
    return ref, hrnet_fast.convert(copy.deepcopy(ref))


def _branches(sizes, batches=(2, 2, 2), channels=(4, 6, 8), dtype=torch.float64, device="cpu"):
    return [torch.randn(n, c, h, w, dtype=dtype, device=device) for n, c, (h, w) in zip(batches, channels, sizes)]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_meta_tensors_run_as_unconverted(train, grad):
    # sizing a model on the meta device
    ref, fused = _module(torch.float32)
    ref, fused = ref.to("meta").train(train), fused.to("meta").train(train)
    with torch.set_grad_enabled(grad):
        for _ in range(2):
            want = ref(_branches([(12, 20), (6, 10), (3, 5)], dtype=torch.float32, device="meta"))
            got = fused(_branches([(12, 20), (6, 10), (3, 5)], dtype=torch.float32, device="meta"))
            assert [t.shape for t in got] == [t.shape for t in want]
            assert all(t.device.type == "meta" for t in got)


@pytest.mark.parametrize("mode", ["eval", "no_grad", "train"])
def test_list_entries_past_the_last_branch_are_ignored_as_unconverted(mode):
    ref, fused = _module()
    for m in (ref, fused):
        m.train(mode == "train")
    extra = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    with torch.set_grad_enabled(mode != "no_grad"):
        for _ in range(2):
            xs = _branches([(12, 20), (6, 10), (3, 5)])
            want = ref([t.clone() for t in xs] + [extra])
            got = fused([t.clone() for t in xs] + [extra])
            assert len(got) == len(want)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w)


@pytest.mark.parametrize("path", ["program", "terms", "train"])
@pytest.mark.parametrize("case", ["spatial", "batch", "height_1"])
def test_mismatched_branches_raise_what_the_unconverted_module_raises(path, case):
    # Where the unconverted module's sum raises, the converted one raises
    # the same type, naming the module, the branch and both shapes. Where
    # the sum only broadcasts by accident (a batch of 1 against 2, a 1x1
    # top branch against its 2x2 upsampled neighbour) the converted module
    # refuses with the same error rather than compute a wrong-sized output.
    ref, fused = _module()
    fx = hrnet_fast.fused_modules(fused)[0].fused_exchange
    fx.eval_program = path == "program"
    sizes, batches = {"spatial": ([(12, 20), (7, 10), (3, 5)], (2, 2, 2)),
                      "batch": ([(12, 20), (6, 10), (3, 5)], (2, 3, 2)),
                      "height_1": ([(1, 1), (1, 1), (1, 1)], (2, 2, 2))}[case]
    if case == "height_1":  # two branches: the 1x1 top one against its 2x2 upsampled neighbour
        from layouts import LAYOUTS

        torch.manual_seed(0)
        ref = randomize_bn(LAYOUTS["timm"]((4, 6))).double()
        fused = hrnet_fast.convert(copy.deepcopy(ref))
        fx = hrnet_fast.fused_modules(fused)[0].fused_exchange
        fx.eval_program = path == "program"
        sizes, batches = sizes[:2], batches[:2]
    for m in (ref, fused):
        m.train(path == "train")
    xs = _branches(sizes, batches)
    with torch.set_grad_enabled(path == "train"):
        try:
            wrong = ref([t.clone() for t in xs])[0]
        except RuntimeError as error:
            assert "must match the size" in str(error)
        else:
            assert case == "height_1" and wrong.shape[-2:] != xs[0].shape[-2:]  # broadcast to the wrong size
        with pytest.raises(RuntimeError, match=r"fuse_layers\[\d\]\[\d\] gives a summand of shape .* for output "
                                               r"branch \d of shape .*must match the size") as info:
            fused([t.clone() for t in xs])
    assert "HighResolutionModule" in str(info.value)


def test_the_readme_shows_the_signature_convert_has():
    import inspect
    import os

    params = inspect.signature(hrnet_fast.convert).parameters.values()
    shown = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}".replace("'", '"') for p in params)
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert f"### `convert({shown})`" in readme
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    # as shown: positional arguments work
    m = hrnet_fast.convert(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=2), "bilinear", True, "auto")
    assert {(fx.fused_exchange.mode, fx.fused_exchange.align_corners) for fx in hrnet_fast.fused_modules(m)} == \
        {("bilinear", True)}
