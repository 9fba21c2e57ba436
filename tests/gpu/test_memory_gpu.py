"""convert(memory="lean" / "checkpoint") on a CUDA device, with each exchange
backend: the recomputation runs there (nothing in it is CPU-only), float64
gradients and running statistics equal eager's, a bfloat16 autocast
channels_last step agrees with eager's within bfloat16's tolerance, and the
step's peak (torch.cuda.max_memory_allocated) drops. Small models: the whole
file runs in seconds. Skipped without a CUDA device."""
from __future__ import annotations

import copy

import pytest
import torch

import hrnet_fast
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.bench.runner import loss_of

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEV = "cuda"
MEMORY = ("lean", "checkpoint")


def _backend(name: str) -> str:
    if not hrnet_fast.backends()[name]:
        pytest.skip(f"the {name} backend is not available here")
    return name


def _seg(arch: str = "w18_small_v1") -> torch.nn.Module:
    torch.manual_seed(0)
    model = hrnet_fast.models.create(arch, "seg", num_classes=3)
    randomize_batchnorm(model)
    return model.train()


def _grads(model: torch.nn.Module) -> list:
    return [p.grad for p in model.parameters()]


# Ids other than the bare word "cuda": conftest skips that keyword without a GPU.
# Triton with lean only: checkpoint makes the same exchange calls, and each
# float64 shape is a kernel compiled (gpu_check runs this file in 90 s).
@pytest.mark.parametrize("backend,memory", [("cuda", "lean"), ("cuda", "checkpoint"), ("triton", "lean")],
                         ids=["cuda-backend-lean", "cuda-backend-checkpoint", "triton-backend-lean"])
def test_float64_gradients_and_statistics_as_eager(backend, memory):
    ref = _seg().double().to(DEV)
    model = hrnet_fast.convert(copy.deepcopy(ref), backend=_backend(backend), memory=memory)
    for step in range(2):
        x = torch.randn(2, 3, 61, 77, dtype=torch.float64, device=DEV)
        xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref.zero_grad()
        model.zero_grad()
        loss_of(ref(xr)).backward()
        loss_of(model(xm)).backward()
        # within 1e-10 of each gradient's largest element, or of a thousandth
        # of the model's largest (a conv bias before a BatchNorm has a
        # gradient that is zero but for rounding)
        floor = 1e-3 * max(float(a.abs().max()) for a in _grads(ref))
        for a, b in zip(_grads(ref), _grads(model)):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10 * max(float(a.abs().max()), floor))
        torch.testing.assert_close(xm.grad, xr.grad, rtol=0, atol=1e-10 * float(xr.grad.abs().max()))
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0, msg=name)


@pytest.mark.parametrize("memory", MEMORY)
def test_bfloat16_channels_last_step_as_eager(memory):
    # Under bfloat16 autocast the order of roundings alone moves some
    # gradients by more than their size, so against float64: as close to
    # its gradients as the converted model without memory= is.
    ref = _seg().to(DEV, memory_format=torch.channels_last)
    x = torch.randn(2, 3, 96, 128, device=DEV).contiguous(memory_format=torch.channels_last)
    truth = copy.deepcopy(ref).double()
    loss_of(truth(x.double())).backward()
    want = torch.cat([p.grad.flatten() for p in truth.parameters()])

    def error(m):
        with torch.autocast(DEV, dtype=torch.bfloat16):
            out = m(x)
        loss_of(out).backward()
        got = torch.cat([p.grad.double().flatten() for p in m.parameters()])
        assert torch.isfinite(got).all()
        return float((got - want).norm() / want.norm())

    plain = error(hrnet_fast.convert(copy.deepcopy(ref)))
    assert error(hrnet_fast.convert(copy.deepcopy(ref), memory=memory)) <= 1.5 * plain + 1e-3, plain


def test_lean_and_checkpoint_lower_the_peak_on_the_gpu():
    base = _seg("w18").to(DEV)
    x = torch.randn(4, 3, 256, 256, device=DEV)
    peaks = {}
    for memory in (None, "lean", "checkpoint"):
        m = copy.deepcopy(base)
        if memory is not None:
            hrnet_fast.convert(m, memory=memory)
        loss_of(m(x)).backward()  # warm: cuDNN workspaces, gradients allocated
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss_of(m(x)).backward()
        torch.cuda.synchronize()
        peaks[memory] = torch.cuda.max_memory_allocated() - before
        del m
    assert peaks["lean"] < 0.8 * peaks[None] and peaks["checkpoint"] < 0.7 * peaks[None], peaks
