"""The example input against the model, before anything is built: its
channel count must be what the first convolution it reaches takes.

Without this check a wrong example reaches the platform's convolution with
prepacked weights, and oneDNN says only "could not create a primitive
descriptor". The model runs on the example up to its first convolution
call, no further (a pre-hook stops it there), in eval mode and without
grad, so what it checks is exactly what eager would meet: whatever the
model does to its input before that convolution (a grey-to-RGB repeat, a
normalisation) counts. Models with hooks are not run (the hooks would see
a call that is not one), nor are those whose forward fails before any
convolution: the build and the warm-up call report those as they are.

Example:
    >>> import torch, hrnet_fast
    >>> model = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> hrnet_fast.optimize(model, torch.randn(1, 4, 64, 64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: hrnet_fast.optimize: example_input has 4 channels (shape (1, 4, 64, 64)), but ... takes 3; ...
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules import module as _module

from ..convert.layers import has_hooks


class _Reached(Exception):
    """Raised by the pre-hook of the first convolution the forward calls."""

    def __init__(self, name: str, conv: nn.Module, x: object):
        super().__init__(name)
        self.name, self.conv, self.x = name, conv, x


def _global_hooks() -> bool:
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)


def first_conv_call(model: nn.Module, example: Tensor) -> Optional[Tuple[str, nn.Module, object]]:
    """(qualified name, module, input) of the first convolution `model`'s
    forward calls on `example`, or None when it calls none or cannot be run
    up to one (see the module doc)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs or _global_hooks() or any(has_hooks(m) for m in model.modules()):
        return None
    handles: List = []
    modes = [(m, m.training) for m in model.modules()]

    def stop_at(name: str):
        def pre_hook(conv, args):
            raise _Reached(name, conv, args[0] if args else None)
        return pre_hook

    try:
        for name, conv in convs:
            handles.append(conv.register_forward_pre_hook(stop_at(name)))
        model.eval()  # no running statistics updated, no dropout
        with torch.no_grad():
            model(example)
    except _Reached as hit:
        return hit.name, hit.conv, hit.x
    except Exception:  # noqa: BLE001 - not this check's to report
        return None
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return None


def check_example_channels(model: nn.Module, example: Tensor) -> None:
    """Raise ValueError naming both channel counts when the first
    convolution `example` reaches cannot take it (see the module doc)."""
    hit = first_conv_call(model, example)
    if hit is None:
        return
    name, conv, x = hit
    want, spatial = conv.in_channels, len(conv.kernel_size)
    # A lazy convolution takes what it first gets; another rank gets the
    # convolution's own error.
    if not isinstance(x, Tensor) or not want or x.dim() not in (spatial + 1, spatial + 2):
        return
    got = x.shape[-spatial - 1]
    if got == want:
        return
    what = f"example_input has {got} channels (shape {tuple(example.shape)})" if x is example else \
        f"example_input (shape {tuple(example.shape)}) reaches it with {got} channels ({tuple(x.shape)})"
    raise ValueError(f"hrnet_fast.optimize: {what}, but the model's first convolution, {name or 'the model'} "
                     f"({type(conv).__name__}({conv.in_channels}, {conv.out_channels}, ...)), takes {want}; "
                     f"optimize with an input like the model's own")
