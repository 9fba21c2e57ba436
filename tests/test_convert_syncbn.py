"""SyncBatchNorm keeps its own (cross-process) statistics: in training the
converted exchange calls the module instead of computing batch statistics
itself; in eval it folds the running statistics like any BN."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import hrnet_fast
from test_convert_common import assert_same_grads, assert_same_state, loss_of, randomize_bn


def _fuse_syncbns(model):
    """The BNs the exchange itself applies: after each 1x1 conv and after the
    last conv of each downsample chain (earlier links run as modules)."""
    out = []
    for host in hrnet_fast.fused_modules(model):
        for i, row in enumerate(host.fuse_layers):
            for j, layer in enumerate(row):
                if j > i:
                    out.append(layer[1])
                elif j < i:
                    out.append(layer[-1][1])
    assert all(isinstance(m, nn.SyncBatchNorm) for m in out)
    return out


@pytest.mark.parametrize("sync_after_convert", [False, True])
def test_syncbn_falls_back_to_module_in_train(sync_after_convert, monkeypatch):
    base = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3)).double()
    ref = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(base))
    if sync_after_convert:
        # convert_sync_batchnorm swaps BN modules; the exchange must follow
        fused = nn.SyncBatchNorm.convert_sync_batchnorm(hrnet_fast.convert(copy.deepcopy(base)))
    else:
        fused = hrnet_fast.convert(nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(base)))
    for m in hrnet_fast.fused_modules(fused):
        # the path that computes statistics itself must still leave
        # SyncBatchNorm to the module
        m.fused_exchange.batch_stats_in_op = True
    bns = _fuse_syncbns(fused)
    assert bns
    # Counted by patching the class, not with hooks: a hooked layer runs as a
    # module on purpose (its hooks must fire), which would hide the fold.
    calls = []
    real_forward = nn.SyncBatchNorm.forward

    def counting_forward(self, z):
        if any(self is bn for bn in bns):
            calls.append(1)
        return real_forward(self, z)

    monkeypatch.setattr(nn.SyncBatchNorm, "forward", counting_forward)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref.train()
    fused.train()
    a, b = ref(x), fused(x)
    assert len(calls) == len(bns)
    torch.testing.assert_close(b, a)
    loss_of(a).backward()
    loss_of(b).backward()
    assert_same_grads(ref, fused)
    assert_same_state(ref, fused)
    calls.clear()
    ref.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x))
    assert calls == []
