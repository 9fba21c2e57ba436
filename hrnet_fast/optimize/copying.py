"""The private copy `optimize` rewrites: new module objects whose parameters
and buffers alias the source's storage.

Every parameter of the copy is a new Parameter object (requires_grad=False)
over the source parameter's storage, every buffer a detached alias, so:
- nothing is copied (parameters the rewrite does not fold stay shared,
  read-only);
- rebinding a tensor of the copy (casting it to another dtype or device,
  which `nn.Module._apply` does through `.data`) never touches the source's
  tensor objects;
- the copy is put in eval mode; the source keeps its own mode.
"""
from __future__ import annotations

import copy

import torch.nn as nn


def private_copy(model: nn.Module) -> nn.Module:
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    twin = copy.deepcopy(model, memo)
    twin.eval()  # not `return twin.eval()`: mmcv-era train() overrides return None
    return twin
