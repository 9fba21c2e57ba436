"""Build the benchmarked model and its input."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import torch
from torch import Tensor, nn

from .config import HEADS, OWN_ARCHS, Case, is_user_model


def timm_hrnet_names() -> List[str]:
    """HRNet model names timm offers (empty when timm is not installed)."""
    try:
        import timm
    except ImportError:
        return []
    return sorted(timm.list_models("hrnet*"))


def _with_current_directory() -> None:
    """Put the current directory on sys.path, last, where it is missing: a
    console script's sys.path starts with its bin/ folder, not with the
    current directory as `python -m` does, and the CLI promises models
    importable from there. Last, so it shadows nothing installed."""
    here = os.getcwd()
    if not any(p in ("", ".", here) for p in sys.path):
        sys.path.append(here)


def user_factory(model: str):
    """The zero-argument callable named by `package.module:factory`,
    imported from sys.path or the current directory."""
    import importlib

    module, _, name = model.partition(":")
    _with_current_directory()
    try:
        factory = importlib.import_module(module)
        for part in name.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model {model!r}: cannot load {name!r} from module {module!r} ({exc})") from exc
    if not callable(factory):
        raise ValueError(f"model {model!r}: {name!r} is not callable")
    return factory


def check_model_name(model: str, head: Optional[str]) -> None:
    """Raise ValueError with the valid choices when `model`/`head` are not a
    timm HRNet name, an own architecture with a head, or a
    `package.module:factory`."""
    if is_user_model(model):
        if head is not None:
            raise ValueError(f"--head applies to hrnet_fast architectures, not to {model!r}")
        user_factory(model)
        return
    if model in OWN_ARCHS:
        if head not in HEADS:
            raise ValueError(f"model {model!r} is an hrnet_fast architecture and needs --head seg or --head pose")
        return
    if model.startswith("hrnet"):
        names = timm_hrnet_names()
        if not names:
            raise ValueError(f"model {model!r} is a timm name, but timm is not installed (pip install timm)")
        if model in names:
            return
    timm_names = ", ".join(timm_hrnet_names()) or "(timm not installed)"
    raise ValueError(f"unknown model {model!r}: expected a timm HRNet name ({timm_names}), an hrnet_fast "
                     f"architecture ({', '.join(OWN_ARCHS)}) with --head seg|pose, or package.module:factory")


def build_model(case: Case) -> nn.Module:
    """A freshly initialised model for `case` (no pretrained weights: none
    can be downloaded here), on the CPU in float32, with random BatchNorm
    statistics and affines so that folding mistakes cannot hide behind the
    default 0/1 values."""
    check_model_name(case.model, case.head)
    torch.manual_seed(case.seed)
    if is_user_model(case.model):
        model = user_factory(case.model)()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {case.model!r}: the factory returned {type(model).__name__}, not an nn.Module")
    elif case.model in OWN_ARCHS:
        try:
            from hrnet_fast import models as own_models
            create = own_models.create
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(f"model {case.model!r} needs hrnet_fast.models.create, which this build of "
                               f"hrnet_fast does not have yet ({exc})") from exc
        model = create(case.model, case.head)
    else:
        import timm

        model = timm.create_model(case.model, pretrained=False)
    randomize_batchnorm(model, seed=case.seed)
    return model


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm mild random running statistics and affine
    parameters (scale near 1, small shifts) from a fixed seed."""
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
            if m.track_running_stats and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def make_input(case: Case) -> Tensor:
    """The (N, 3, H, W) input of `case`, on its device, dtype and layout."""
    gen = torch.Generator().manual_seed(case.seed + 2)
    x = torch.randn(case.batch, 3, case.size[0], case.size[1], generator=gen)
    x = x.to(device=case.device, dtype=case.torch_dtype)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def place(model: nn.Module, case: Case) -> nn.Module:
    """Move `model` to the case's device, dtype and memory format, in the
    mode (train/eval) the case times."""
    model = model.to(device=case.device, dtype=case.torch_dtype)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train(case.train)
