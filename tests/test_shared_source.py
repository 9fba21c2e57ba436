"""Merged first convs per source branch (hrnet_fast.shared_source): used in
eval on NCHW sources, exact against the unconverted model, invalidated with
the folds, and out of the way of hooks, batch statistics and channels_last."""
from __future__ import annotations

import pytest
import torch

import hrnet_fast
import hrnet_fast.shared_source as ss
from test_convert_common import (eval_matches, freeze_batchnorm, grad_modes_agree, gradients_match, pair,
                                 record_outputs)

X1 = (1, 3, 64, 64)


@pytest.fixture
def merges(monkeypatch):
    """Records how many first convs each call merged (on either path: the
    general terms or the compiled inference rows)."""
    log = []
    real = ss.merged_outputs

    def spy(group, members, *args):
        log.append(len(members))
        return real(group, members, *args)

    monkeypatch.setattr(ss, "merged_outputs", spy)
    return log


def _groups(model):
    return [g for m in hrnet_fast.fused_modules(model) for g in m.fused_exchange.shared_sources]


@pytest.mark.parametrize("arch,head,kw", [
    ("w18_small_v1", "pose", {}),
    ("w18_small_v2", "seg", {"num_classes": 3, "align_corners": True}),
    ("w18_small_v2", "seg", {"num_classes": 3, "align_corners": False}),
])
def test_single_image_eval_merges_and_matches(merges, arch, head, kw):
    ref, fused = pair(hrnet_fast.models.create(arch, head, **kw))
    groups = _groups(fused)
    assert {g.kind for g in groups} == {"up", "down"}
    eval_matches(ref, fused, torch.randn(X1, dtype=torch.float64))
    assert sum(merges) == sum(len(g.rows) for g in groups)
    if head == "seg":  # 250x330 scaled down: no branch size divides evenly
        eval_matches(ref, fused, torch.randn(1, 3, 50, 66, dtype=torch.float64))


def test_timm_single_image_eval_matches(merges):
    timm = pytest.importorskip("timm")
    ref, fused = pair(timm.create_model("hrnet_w18_small_v2", pretrained=False, features_only=True))
    eval_matches(ref, fused, torch.randn(X1, dtype=torch.float64))
    assert sum(merges) > 0


def test_batches_merge_and_training_does_not(merges):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "pose"))
    eval_matches(ref, fused, torch.randn(3, 3, 64, 64, dtype=torch.float64))  # strided slices
    assert sum(merges) == sum(len(g.rows) for g in _groups(fused))
    merges.clear()
    fused.train()
    fused(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert sum(merges) == 0


def test_channels_last_sources_do_not_merge(merges):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "seg", num_classes=3))
    ref = ref.to(memory_format=torch.channels_last)
    fused = fused.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    eval_matches(ref, fused, x)
    assert sum(merges) == 0


def test_merged_weights_follow_parameter_updates():
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    x = torch.randn(X1, dtype=torch.float64)
    eval_matches(ref, fused, x)
    eval_matches(ref, fused, x)  # stacked weights cached
    for model in (ref, fused):
        host = [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 4][0]
        with torch.no_grad():
            host.fuse_layers[2][0][0][1].running_var.mul_(2.5)  # a merged DOWN first link
            host.fuse_layers[0][3][0].weight.mul_(-1.0)  # a merged UP conv
    eval_matches(ref, fused, x)


def test_hooked_first_link_is_left_out(merges):
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    seen = record_outputs({name: [m for m in model.modules() if len(getattr(m, "fuse_layers", ())) == 4][0]
                           .fuse_layers[3][0][0][0] for name, model in (("ref", ref), ("fused", fused))})
    eval_matches(ref, fused, torch.randn(X1, dtype=torch.float64))
    assert set(seen) == {"ref", "fused"}
    torch.testing.assert_close(seen["fused"], seen["ref"], rtol=1e-12, atol=1e-12)


def test_frozen_batchnorm_single_image_gradients(merges):
    # BN frozen (eval, no grads) while the convs train: the merged convs are
    # part of the graph and every conv weight gets its exact gradient.
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "seg", num_classes=3))
    for model in (ref, fused):
        freeze_batchnorm(model)
    gradients_match(ref, fused, torch.randn(X1, dtype=torch.float64))
    assert sum(merges) > 0


def test_inference_mode_then_no_grad_then_grad(merges):
    # stacked weights made under inference_mode must not leak into calls
    # outside it (inference tensors cannot be saved for backward)
    ref, fused = pair(hrnet_fast.models.create("w18_small_v2", "pose"))
    grad_modes_agree(ref, fused, torch.randn(X1, dtype=torch.float64))
    assert sum(merges) > 0


def test_compile_fullgraph_single_image_eval(merges):
    # A named backend keeps the op under torch.compile, and with it the
    # merged convs ("auto" on the CPU compiles the source's own summands).
    torch._dynamo.reset()
    ref, fused = pair(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=3), backend="cpu")
    ref.eval()
    fused.eval()
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    x = torch.randn(X1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x))
    assert sum(merges) > 0
