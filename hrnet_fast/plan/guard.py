"""What a value derived from a model's layers rests on, and the one check
that it still holds.

A fold of a BatchNorm into its convolution, a compiled eval program or an
optimized model is computed from a model's tensors once and reused. It stays
right while:

- every tensor it was made from is still the one the module holds (a
  parameter swapped by `torch.func.functional_call`, `load_state_dict(
  assign=True)` or a plain `setattr` is another object),
- none was modified in place (PyTorch's version counter: optimizer steps,
  `load_state_dict`, `p.mul_(2)` under no_grad, and a BatchNorm's training
  forward through its num_batches_tracked counter: ATen updates the running
  statistics without bumping theirs),
- each is where it was (`.to()`, `.half()` and `.cuda()` give a parameter new
  storage through `.data`, which bumps no counter),
- every BatchNorm it folded is still in eval, and
- no module it stands for has gained (or lost) a hook.

`Guard` records those facts and `holds()` checks them all. Edits through
`.data` bypass version counters and are not seen. The C++ one-call executor
(plan.native) checks the same facts from the same Guard.

The registration generation counts every module, parameter and buffer
registration anywhere in the process: a swapped submodule (SyncBatchNorm
conversion) is seen through it. PyTorch's global registration hooks are
installed here, once for the whole package.

Example:
    >>> import torch, torch.nn as nn
    >>> from hrnet_fast.plan.guard import Guard
    >>> conv = nn.Conv2d(2, 2, 1)
    >>> g = Guard.of_modules([conv])
    >>> g.holds()
    True
    >>> with torch.no_grad():
    ...     _ = conv.weight.mul_(2)
    >>> g.holds()
    False
"""
from __future__ import annotations

import weakref
from operator import attrgetter, methodcaller
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

_VERSION = attrgetter("_version")
_DATA_PTR = methodcaller("data_ptr")
_TRAINING = attrgetter("training")

_GENERATION = [0]


def _registered(*_args) -> None:
    _GENERATION[0] += 1


torch.nn.modules.module.register_module_module_registration_hook(_registered)
torch.nn.modules.module.register_module_parameter_registration_hook(_registered)
torch.nn.modules.module.register_module_buffer_registration_hook(_registered)


def generation() -> int:
    """How many modules, parameters and buffers have been registered in this
    process so far (a swapped layer or tensor changes it)."""
    return _GENERATION[0]


def owned_tensors(module: nn.Module) -> List[Tuple[dict, str, Tensor]]:
    """(owner dict, name, tensor) for every parameter and buffer of `module`
    and its submodules (a parametrized weight's originals live in one):
    where a swapped tensor would show."""
    return [(d, name, t) for m in module.modules() for d in (m._parameters, m._buffers) for name, t in d.items()
            if t is not None]


class Guard:
    """The facts a derived value rests on (see the module doc).

    `owned`: (owner dict, name, tensor) triples; `bns`: modules that must
    stay in eval; `hook_dicts`: hook dicts that must stay as empty (or not)
    as they are now."""
    __slots__ = ("owned", "tensors", "versions", "places", "bns", "hook_dicts", "hooked")

    def __init__(self, owned: Sequence[Tuple[dict, str, Tensor]], bns: Sequence[nn.Module] = (),
                 hook_dicts: Sequence[dict] = ()):
        self.owned = tuple(owned)
        self.tensors = [t for _, _, t in self.owned]
        self.versions = list(map(_VERSION, self.tensors))
        self.places = list(map(_DATA_PTR, self.tensors))
        self.bns = tuple(bns)
        self.hook_dicts = tuple(hook_dicts)
        self.hooked = tuple(map(bool, self.hook_dicts))

    @classmethod
    def of_modules(cls, modules: Iterable[nn.Module], bns: Sequence[nn.Module] = (),
                   hooked: Sequence[nn.Module] = ()) -> "Guard":
        """A guard on every tensor `modules` hold, the eval mode of `bns`
        and the forward hooks of `hooked`."""
        seen, owned = set(), []
        for m in modules:
            for t in owned_tensors(m):
                if (id(t[0]), t[1]) not in seen:
                    seen.add((id(t[0]), t[1]))
                    owned.append(t)
        hook_dicts = [d for m in hooked for d in (m._forward_hooks, m._forward_pre_hooks)]
        return cls(owned, bns, hook_dicts)

    def holds(self) -> bool:
        # map() over C getters: this runs on every call of a Python path.
        if tuple(map(bool, self.hook_dicts)) != self.hooked or any(map(_TRAINING, self.bns)):
            return False
        if list(map(_VERSION, self.tensors)) != self.versions:
            return False
        for owner, name, t in self.owned:
            if owner.get(name) is not t:
                return False
        return list(map(_DATA_PTR, self.tensors)) == self.places


class ModelGuard:
    """The same facts for a whole model, cheap enough to check on every call
    of it (an optimized copy's source): every parameter's and buffer's
    version counter; the first one's storage (a move or cast moves them
    all); and, after a registration anywhere (the generation), every
    tensor's identity by name. The model is held weakly: once it is gone it
    cannot change any more. `change()` says what changed, or None."""

    def __init__(self, model: nn.Module):
        self._model = weakref.ref(model)
        named = self._named(model)
        self.names = [n for n, _ in named]
        self.tensors = [t for _, t in named]
        self.versions = list(map(_VERSION, self.tensors))
        self.first_place = self.tensors[0].data_ptr() if self.tensors else 0
        self.generation = generation()

    @staticmethod
    def _named(model: nn.Module) -> List[Tuple[str, Tensor]]:
        # Every buffer, num_batches_tracked included (see the module doc).
        return list(model.named_parameters()) + list(model.named_buffers())

    def change(self) -> Optional[str]:
        tensors = self.tensors
        if list(map(_VERSION, tensors)) != self.versions:
            k = next(i for i, t in enumerate(tensors) if t._version != self.versions[i])
            return f"`{self.names[k]}` was modified in place"
        if tensors and tensors[0].data_ptr() != self.first_place:
            return f"`{self.names[0]}` has new storage (the model was moved or cast)"
        if generation() != self.generation:
            model = self._model()
            if model is not None:
                named = self._named(model)
                if [n for n, _ in named] != self.names:
                    return "its set of parameters and buffers is different"
                for (name, t), held in zip(named, tensors):
                    if t is not held:
                        return f"`{name}` was replaced by another tensor"
            self.generation = generation()
        return None


__all__ = ["Guard", "ModelGuard", "generation", "owned_tensors"]
