"""The reference backend: hrnet_fast.reference, the definition in plain
PyTorch, after the same value checks as every other backend."""
from __future__ import annotations

from typing import FrozenSet

from torch import Tensor

from .. import reference as _reference
from ..contract import ExchangeCall, check_values
from .base import Backend


class ReferenceBackend(Backend):
    name = "reference"
    devices: FrozenSet[str] = frozenset({"any"})
    conv_terms = "kernel"  # the definition computes them itself
    conv_note = "conv terms by F.conv2d"
    notes = "plain PyTorch, the definition every backend is tested against"

    def supported_devices(self) -> FrozenSet[str]:
        return frozenset({"any"})

    def not_supported_reasons(self, call: ExchangeCall):
        return []  # any device and dtype PyTorch's own ops take

    def run(self, call: ExchangeCall) -> Tensor:
        check_values(call)
        return run_reference(call)


def run_reference(call: ExchangeCall) -> Tensor:
    """The definition on `call`, unchecked (also what traces and exports
    record: standard operators only)."""
    return _reference.exchange(call.inputs, call.scales or None, call.shifts or None, convs=call.convs,
                               size=call.size, mode=call.mode, align_corners=call.align_corners, relu=call.relu)
