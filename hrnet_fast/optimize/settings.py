"""How a model is optimized, decided once from the model, the example input
and the caller's choices: device, compute dtype, layout, CUDA graphs, the
convolution platform (hrnet_fast.optimize.convs) and the exchange backend.

Defaults and why:
- CPU: the model's dtype (float32); channels_last with oneDNN's prepacked
  weights (a prepacked oneDNN convolution writes channels_last anyway, and
  with channels_last activations no convolution reorders its input;
  benchmarks/optimize_cpu.py). No CUDA graphs.
- CUDA: bfloat16 (float32 models on a GPU that has it) and channels_last:
  convolutions run on the tensor cores in NHWC, the layout cuDNN's bf16
  kernels are written for, and bf16 keeps float32's range, so no loss
  scaling or overflow care is needed as with float16. CUDA graphs on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..backend import check_name
from .convs import Platform
from .example import check_example_channels

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype          # what the model computes in
    input_dtype: torch.dtype    # what it takes (and returns)
    input_rank: int
    channels_last: bool
    cuda_graph: bool
    platform: Platform
    backend: str


def _model_device_dtype(model: nn.Module):
    device, dtype = None, None
    for t in list(model.parameters()) + list(model.buffers()):
        if device is None:
            device = t.device
        if dtype is None and t.is_floating_point():
            dtype = t.dtype
        if device is not None and dtype is not None:
            break
    return device, dtype


def _mkldnn_takes(dtype: torch.dtype) -> bool:
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


# Which fused convolution platforms optimize may pick; clearing one makes
# it use the plain form there (F.conv2d + in-place epilogue), e.g. to
# measure the fused calls against it.
FUSED_PLATFORMS = {Platform.MKLDNN: True, Platform.CUDNN: True}


def _platform(device: torch.device, dtype: torch.dtype) -> Platform:
    if device.type == "cpu" and _mkldnn_takes(dtype) and FUSED_PLATFORMS[Platform.MKLDNN]:
        return Platform.MKLDNN
    if device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled \
            and dtype in (torch.float32, torch.float16, torch.bfloat16) and FUSED_PLATFORMS[Platform.CUDNN]:
        return Platform.CUDNN
    return Platform.PLAIN


def resolve(model: nn.Module, example_input: Optional[Tensor], dtype: Optional[torch.dtype],
            channels_last: Optional[bool], cuda_graph: Optional[bool], backend: str) -> Settings:
    """The Settings for these arguments; bad arguments raise here."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"hrnet_fast.optimize: expected an nn.Module, got {type(model).__name__}")
    check_name("hrnet_fast.optimize", backend)
    if example_input is not None and not isinstance(example_input, Tensor):
        raise TypeError(f"hrnet_fast.optimize: example_input must be a tensor, got {type(example_input).__name__}")
    device, model_dtype = _model_device_dtype(model)
    if device is None:
        device = example_input.device if example_input is not None else torch.device("cpu")
    if example_input is not None and example_input.device != device:
        raise ValueError(f"hrnet_fast.optimize: example_input is on {example_input.device} but the model is on "
                         f"{device}; move one of them")
    model_dtype = model_dtype or torch.float32
    input_dtype = example_input.dtype if example_input is not None else model_dtype
    if input_dtype not in _FLOATS:
        raise TypeError(f"hrnet_fast.optimize: example_input must be floating point, got {input_dtype}")
    if dtype is None:
        if device.type == "cuda" and model_dtype == torch.float32 and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        else:
            dtype = model_dtype
    elif dtype not in _FLOATS:
        raise TypeError(f"hrnet_fast.optimize: dtype must be one of {_FLOATS}, got {dtype!r}")
    platform = _platform(device, dtype)
    if channels_last is None:
        channels_last = device.type == "cuda" or platform is Platform.MKLDNN
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    elif cuda_graph and device.type != "cuda":
        raise ValueError(f"hrnet_fast.optimize: cuda_graph=True needs a model on a CUDA device, not {device}")
    rank = example_input.dim() if example_input is not None else 4
    if example_input is not None:
        check_example_channels(model, example_input)
    return Settings(device=device, dtype=dtype, input_dtype=input_dtype, input_rank=rank,
                    channels_last=bool(channels_last), cuda_graph=bool(cuda_graph), platform=platform,
                    backend=backend)
