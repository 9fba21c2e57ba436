"""BatchNorm folding in the converted exchange (issue 7's drop-in): in eval
and for frozen BN, the chain's last BN is folded into its stride-2 conv and
passed to the op as a conv term, the earlier links' BNs into their convs,
the 1x1-conv BN into the 1x1 conv; folds are cached and recomputed when
parameters or buffers change."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import hrnet_fast
import hrnet_fast.backend
from hrnet_fast.convert import module as fm
from hrnet_fast.convert import folding
from hrnet_fast.plan.program import Exchange
from test_convert_common import (assert_close_lists, assert_same_grads, eval_matches, freeze_batchnorm,
                                 gradients_match, loss_of, pair, randomize_bn, record_outputs)

X = (2, 3, 64, 64)


@pytest.fixture
def calls(monkeypatch):
    """Records every exchange call the converted modules make from their
    terms (the general path; eval programs are inspected directly)."""
    log = []
    real = fm.exchange

    def spy(inputs, scales=None, shifts=None, **kw):
        log.append(dict(n=len(inputs), convs=len(kw.get("convs", ())), scales=scales, shifts=shifts))
        return real(inputs, scales, shifts, **kw)

    monkeypatch.setattr(fm, "exchange", spy)
    return log


@pytest.fixture
def folds(monkeypatch):
    log = []
    real = folding.fold

    def spy(conv, bn, dtype=None):
        log.append(1)
        return real(conv, bn, dtype)

    monkeypatch.setattr(folding, "fold", spy)
    return log


def _rows(model):
    return sum(len(m.fuse_layers) for m in hrnet_fast.fused_modules(model))


def _downs(model):
    return sum(1 for m in hrnet_fast.fused_modules(model) for i, row in enumerate(m.fuse_layers)
               for j in range(len(row)) if j < i)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_eval_is_one_call_per_row_with_folded_convs(backend):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose"), backend=backend)
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))
    rows = [ins for m in hrnet_fast.fused_modules(fused) for ins in m.fused_exchange.program.code
            if isinstance(ins, Exchange)]
    assert len(rows) == _rows(fused)
    # every BN is folded into a conv: the op gets no affine rows at all
    assert all(ins.shifts is None for ins in rows)
    if hrnet_fast.backend.conv_terms_in_kernel(backend, "cpu"):
        # the chains' last convs run inside the op
        assert sum(len(ins.convs) for ins in rows) == _downs(fused) > 0
    else:
        # no conv-term kernel: the folded conv runs as a library call
        assert sum(len(ins.convs) for ins in rows) == 0


@pytest.mark.parametrize("in_op", [False, True])
def test_train_keeps_batch_statistics_path(calls, in_op):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose"))
    for m in hrnet_fast.fused_modules(fused):
        m.fused_exchange.batch_stats_in_op = in_op
    fused.train()
    fused(torch.randn(X, dtype=torch.float64))
    assert len(calls) == _rows(fused)
    assert sum(c["convs"] for c in calls) == 0
    # in_op: the op applies the batch-statistics affine; else BN modules ran
    assert all((c["scales"] is not None) == in_op for c in calls)


def test_fold_cache_and_invalidation(folds):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    x = torch.randn(X, dtype=torch.float64)
    eval_matches(ref, fused, x)
    first = len(folds)
    assert first > 0
    eval_matches(ref, fused, x)
    assert len(folds) == first  # cached
    # an in-place update (optimizer step, manual edit) invalidates the cache
    host = hrnet_fast.fused_modules(fused)[-1]
    host_ref = [m for m in ref.modules() if isinstance(m, type(host))][-1]
    for m in (host, host_ref):
        with torch.no_grad():
            m.fuse_layers[1][0][-1][1].weight.mul_(-2.0)
            m.fuse_layers[0][1][1].running_var.mul_(3.0)
            m.fuse_layers[3][1][-1][0].weight.add_(0.5)
            m.fuse_layers[3][0][0][1].running_mean.add_(0.25)  # an earlier link of a chain
    eval_matches(ref, fused, x)
    assert len(folds) > first
    # load_state_dict copies into the tensors: invalidates too
    other = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3), seed=7).double()
    ref.load_state_dict(other.state_dict())
    fused.load_state_dict(other.state_dict())
    eval_matches(ref, fused, x)
    # .to() moves tensors to new storage
    ref.float()
    fused.float()
    ref.eval()
    fused.eval()
    with torch.no_grad():
        a, b = ref(x.float()), fused(x.float())
    assert b.dtype == torch.float32
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_fold_reads_parametrized_conv_weights(folds):
    # The fold cache reads tensors from the modules' dicts for speed; a
    # parametrized conv keeps no plain weight there and must still fold with
    # (and be invalidated by) its computed weight.
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w):
            return 2.0 * w

    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose"))
    for model in (ref, fused):
        host = [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) >= 2][0]
        parametrize.register_parametrization(host.fuse_layers[1][0][-1][0], "weight", Doubled())
        parametrize.register_parametrization(host.fuse_layers[0][1][0], "weight", Doubled())
    x = torch.randn(X, dtype=torch.float64)
    eval_matches(ref, fused, x)
    for model in (ref, fused):
        host = [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) >= 2][0]
        with torch.no_grad():
            host.fuse_layers[0][1][0].parametrizations.weight.original.mul_(-1.5)
    eval_matches(ref, fused, x)


def test_eval_with_grad_enabled_differentiates_through_fold(folds):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose"))
    ref.eval()
    fused.eval()
    gradients_match(ref, fused, torch.randn(X, dtype=torch.float64))


def test_frozen_batchnorm_in_training(calls):
    # fine-tuning with frozen BN: model in train, BN in eval without grads;
    # the folded path is used and the conv weights still get exact gradients
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "seg", num_classes=3), backend="reference")
    for model in (ref, fused):
        freeze_batchnorm(model)
    x = torch.randn(X, dtype=torch.float64)
    a, b = ref(x), fused(x)
    assert_close_lists(a, b)
    assert sum(c["convs"] for c in calls) == _downs(fused)
    loss_of(a).backward()
    loss_of(b).backward()
    assert_same_grads(ref, fused)


def test_hooked_chain_link_runs_as_module():
    # Earlier chain links fold their BN in eval; a link with a hook on any
    # of its modules runs as a module, so the hook sees what it saw before.
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose"))
    seen = record_outputs({name: [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 3][0]
                           .fuse_layers[2][0][0][1] for name, model in (("ref", ref), ("fused", fused))})
    eval_matches(ref, fused, torch.randn(X, dtype=torch.float64))
    assert set(seen) == {"ref", "fused"}
    torch.testing.assert_close(seen["fused"], seen["ref"], rtol=1e-12, atol=1e-12)


def test_eval_programs_choose_a_backend_once_per_signature(monkeypatch):
    # After a signature's first eval call each row calls its bound runner
    # (ops.bind_exchange): no backend choice, the same results; a new input
    # size builds and binds again.
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    choices = []
    real_choose = hrnet_fast.ops.choose
    monkeypatch.setattr(hrnet_fast.ops, "choose", lambda name, call: choices.append(name) or real_choose(name, call))
    rows = sum(len(m.fused_exchange.terms) for m in hrnet_fast.fused_modules(fused))
    for shape in (X, (1, 3, 50, 70), X):
        x = torch.randn(shape, dtype=torch.float64)
        before = len(choices)
        eval_matches(ref, fused, x)
        first = len(choices) - before
        for _ in range(2):
            eval_matches(ref, fused, torch.randn(shape, dtype=torch.float64))
        assert len(choices) - before == first, "later calls of one signature chose a backend again"
        assert first <= 2 * rows  # the first call's choice and its binding, per row
