"""The stale-weights rule: an optimized module refuses to run once its
source model's tensors changed.

`optimize` folds BatchNorms into new convolution weights, so a later change
to the source would not reach the optimized module. `SourceGuard.check()`
runs before every call and raises `StaleSourceError` when, since optimize():

- any parameter or buffer of the source was modified in place through
  PyTorch (optimizer steps, `load_state_dict`, `with torch.no_grad(): p.mul_(2)`):
  PyTorch's version counters, read for every tensor on every call (about
  0.1 us each);
- a BatchNorm of the source ran a training-mode forward (its running
  statistics changed: ATen does not bump their version counters, but
  nn.BatchNorm counts the batch in num_batches_tracked, which it does);
- the source was moved or cast (`.to()`, `.half()`, `.cuda()`: new storage
  for every tensor, seen on the first one);
- a parameter or buffer was replaced by another tensor object (setattr,
  `load_state_dict(assign=True)`, module surgery): seen through PyTorch's
  global registration hooks, after which the source's tensors are compared
  by identity once.

Edits through `.data` bypass version counters and are not seen: after them
call `hrnet_fast.optimize(model)` again, as after any change.

Example:
    >>> import torch, torch.nn as nn
    >>> from hrnet_fast.optimize.guard import SourceGuard, StaleSourceError
    >>> m = nn.Conv2d(2, 2, 1)
    >>> g = SourceGuard(m)
    >>> g.check()
    >>> with torch.no_grad():
    ...     _ = m.weight.mul_(2)
    >>> try:
    ...     g.check()
    ... except StaleSourceError as e:
    ...     print("weight" in str(e))
    True
"""
from __future__ import annotations

import weakref
from operator import attrgetter
from typing import List, Tuple

import torch
import torch.nn as nn

_version = attrgetter("_version")

# Bumped whenever any module anywhere registers (or re-registers) a
# parameter, buffer or submodule.
_GENERATION = [0]


def _registered(*_args):
    _GENERATION[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_registered)
torch.nn.modules.module.register_module_buffer_registration_hook(_registered)
torch.nn.modules.module.register_module_module_registration_hook(_registered)


class StaleSourceError(RuntimeError):
    """The source model changed after `optimize`; optimize it again."""


def _named_tensors(model: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    # Every buffer, num_batches_tracked included: ATen's batch norm updates
    # the running statistics without bumping their version counters, but
    # a training-mode forward of nn.BatchNorm bumps num_batches_tracked.
    return list(model.named_parameters()) + list(model.named_buffers())


class SourceGuard:
    def __init__(self, model: nn.Module):
        self._model = weakref.ref(model)
        named = _named_tensors(model)
        self.names = [n for n, _ in named]
        self.tensors = [t for _, t in named]
        self.versions = list(map(_version, self.tensors))
        self.first_ptr = self.tensors[0].data_ptr() if self.tensors else 0
        self.generation = _GENERATION[0]

    def _stale(self, what: str) -> StaleSourceError:
        return StaleSourceError(f"hrnet_fast.optimize: the source model changed after optimize(): {what}. The "
                                f"optimized module holds folded copies of its weights and would serve stale "
                                f"results; call hrnet_fast.optimize(model) again")

    def check(self) -> None:
        tensors = self.tensors
        if list(map(_version, tensors)) != self.versions:
            k = next(i for i, t in enumerate(tensors) if t._version != self.versions[i])
            raise self._stale(f"`{self.names[k]}` was modified in place")
        if tensors and tensors[0].data_ptr() != self.first_ptr:
            raise self._stale(f"`{self.names[0]}` has new storage (the model was moved or cast)")
        if _GENERATION[0] != self.generation:
            self._check_identity()

    def _check_identity(self) -> None:
        model = self._model()
        if model is None:  # the source is gone: it cannot change any more
            self.generation = _GENERATION[0]
            return
        named = _named_tensors(model)
        if [n for n, _ in named] != self.names:
            raise self._stale("its set of parameters and buffers is different")
        for (name, t), held in zip(named, self.tensors):
            if t is not held:
                raise self._stale(f"`{name}` was replaced by another tensor")
        self.generation = _GENERATION[0]
