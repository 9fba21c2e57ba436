"""What a lean forward keeps for backward: real tensors, or recipes that
recompute a saved value from what is kept.

Autograd saves a tensor for backward through the saved-tensor hooks; a
`Session` is a pair of them. A tensor the lean mode (memory.mode) has
registered a recipe for -- the output of a BatchNorm, a ReLU, an add, an
interpolation, a concatenation or an exchange, each computed from tensors
that are kept anyway (convolution outputs, which BatchNorm saves) or from
other recipes -- is packed as its recipe: nothing of its own size is kept,
and the first unpack in backward recomputes it. Any other tensor is kept as
it is.

Kept tensors go through the saved-tensor hooks that were active when the
session began (a memory measurement, `torch.autograd.graph.save_on_cpu`),
once per tensor: what those hooks see is exactly what this forward keeps.
As autograd does, a kept tensor modified in place before backward raises at
unpack.

A recomputed value is shared by every use of it in one backward and dropped
once the last of them (every direct unpack, every recipe built on it) is
done, so a backward holds no more recomputed tensors at a time than eager
code holds saved ones. Recomputation runs without autograd, under the
autocast state of the forward; a second backward through it (create_graph)
raises instead of silently treating recomputed values as constants.

Example:
    >>> import torch
    >>> from hrnet_fast.memory.recipes import Recipe, Session
    >>> c = torch.randn(4, requires_grad=True) * 2
    >>> with Session() as s:
    ...     r = torch.relu(c)
    ...     s.register(r, Recipe(torch.relu, (s.ref(c),), {}, r))
    ...     y = (r * 3).sum()   # mul saves r: packed as its recipe
    >>> y.backward()
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

_DOUBLE_BACKWARD = ("hrnet_fast memory='lean' / 'checkpoint': the activations saved for backward are recomputed "
                    "without an autograd graph, so they cannot be differentiated again (create_graph=True, "
                    "higher-order gradients); convert without memory= for those")


# Recipes a recomputation may chain through: about two BasicBlocks (each
# adds three: BatchNorm, add, ReLU). Measured on this package's W32 pose
# model, 2x3x256x192, float32 (activations kept / step peak, eager 288 /
# 307 MiB): unbounded 152 / 318, 12: 158 / 257, 6: 170 / 220, 4: 180 /
# 225, 3: 188 / 230 -- 6 keeps the step's peak lowest.
MAX_DEPTH = 6


def _modified(version: int, now: int) -> RuntimeError:
    return RuntimeError(f"one of the variables needed for gradient computation has been modified by an inplace "
                        f"operation: is at version {now}; expected version {version} instead (hrnet_fast lean "
                        f"training keeps it as autograd would)")


class Kept:
    """A real tensor kept for backward, through the outer hooks if any.
    `next`: the same tensor kept at another version."""
    __slots__ = ("packed", "version", "unpack", "source", "next")

    def __init__(self, t: Tensor, outer: Optional[Tuple[Callable, Callable]], version: int):
        self.version, self.next = version, None
        if outer is None:
            self.packed, self.unpack, self.source = t, None, None
        else:
            # the outer hooks may let `t` go (to the CPU, to disk): known
            # by a weak reference, so its id is not taken for another's
            self.packed, self.unpack, self.source = outer[0](t), outer[1], weakref.ref(t)

    def holds(self, t: Tensor, version: Optional[int] = None) -> bool:
        """Whether this keeps `t` (at `version`, any if None)."""
        same = self.packed is t if self.source is None else self.source() is t
        return same and (version is None or version == self.version)

    def value(self) -> Tensor:
        if self.unpack is not None:
            return self.unpack(self.packed)
        t = self.packed
        if t._version != self.version:
            raise _modified(self.version, t._version)
        return t

    def release(self) -> None:
        pass


class _Raw:
    """A tensor argument of a recipe at the version it had: kept (Kept)
    only if the recipe is ever packed."""
    __slots__ = ("tensor", "version")

    def __init__(self, t: Tensor):
        self.tensor, self.version = t, t._version


_SEQUENCE = (list, tuple)


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, _SEQUENCE):
        return type(value)([_map(v, fn) if isinstance(v, _SEQUENCE) else fn(v) for v in value])
    return fn(value)


def _leaves(value: Any, out: List[Any]) -> List[Any]:
    """The non-sequence items of `value`, nested lists and tuples opened,
    appended to `out`."""
    if isinstance(value, _SEQUENCE):
        for v in value:
            if isinstance(v, _SEQUENCE):
                _leaves(v, out)
            else:
                out.append(v)
    else:
        out.append(value)
    return out


def _arguments(args: tuple, kwargs: Dict[str, Any]) -> List[Any]:
    """The leaves of a call's positional and keyword arguments."""
    out = _leaves(args, [])
    return _leaves(tuple(kwargs.values()), out) if kwargs else out


class Recipe:
    """`fn(*args, **kwargs)` recomputes a saved value. Tensor arguments are
    other Recipes or `Session.ref`s; `like` is the value as the forward
    computed it (its dtype is what a recomputation gives).

    `into(first, *args, **kwargs)`, when given, computes the same value
    writing over its first argument: it is used when that argument is a
    recipe's freshly computed value (`fresh`: fn never returns an alias of
    what it reads) that nothing else will read again, so a recomputed
    BatchNorm -> add -> ReLU chain allocates one tensor, not three."""
    __slots__ = ("fn", "args", "kwargs", "dtype", "autocast", "kept", "pending", "memo", "deps", "depth", "into",
                 "fresh", "version")

    def __init__(self, fn: Callable[..., Tensor], args: tuple, kwargs: Dict[str, Any], like: Tensor,
                 into: Optional[Callable[..., Tensor]] = None, fresh: bool = False):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.into, self.fresh = into, fresh
        # The recipes it reads, and how many recipes deep its recomputation
        # goes (Session.register).
        self.deps = tuple(leaf for leaf in _arguments(args, kwargs) if isinstance(leaf, Recipe))
        self.depth = 1 + max((d.depth for d in self.deps), default=0)
        self.dtype = like.dtype
        device = like.device.type
        self.autocast = (device, torch.get_autocast_dtype(device)) if (
            torch._C._is_autocast_available(device) and torch.is_autocast_enabled(device)) else None
        self.kept = False   # raw arguments turned into Kept: the recipe is packed
        self.pending = 0    # uses not yet done: direct unpacks and recipes built on it
        self.memo: Optional[Tensor] = None
        self.version = -1   # of the tensor it recomputes (Session.register)

    def keep(self, session: "Session") -> bool:
        """Keeps what this recipe reads (once), counting itself as used by
        its recipe arguments; False when a tensor it reads was modified in
        place since (it cannot be recomputed)."""
        if self.kept:
            return True
        for leaf in _arguments(self.args, self.kwargs):
            if isinstance(leaf, _Raw) and leaf.tensor._version != leaf.version:
                return False
            if isinstance(leaf, Recipe) and not leaf.keep(session):
                return False

        def kept(v):
            if isinstance(v, _Raw):
                return session.keep(v.tensor, v.version)
            return v

        self.args = _map(self.args, kept)
        if self.kwargs:
            self.kwargs = {k: _map(v, kept) for k, v in self.kwargs.items()}
        for d in self.deps:
            d.pending += 1
        self.kept = True
        return True

    def value(self) -> Tensor:
        """The recomputed value (grad mode is off: `_unpack`)."""
        if self.memo is None:
            fn, args = self.fn, self.args
            first = args[0] if args else None
            if (self.into is not None and isinstance(first, Recipe) and first.fresh and first.pending == 1
                    and first.memo is None):
                # the only read of `first` (no value of it handed out
                # before): its value becomes this one's
                fn, args = self.into, (first.take(), *_map(args[1:], _value))
            else:
                args = _map(args, _value)
            kwargs = {k: _map(v, _value) for k, v in self.kwargs.items()} if self.kwargs else {}
            if self.autocast is not None:
                with torch.autocast(self.autocast[0], dtype=self.autocast[1]):
                    out = fn(*args, **kwargs)
            else:
                out = fn(*args, **kwargs)
            self.memo = out if out.dtype == self.dtype else out.to(self.dtype)
        return self.memo

    def take(self) -> Tensor:
        """The value, handed over to its last reader (which may write over
        it): no longer held here."""
        out = self.value()
        self.memo = None
        return out

    def release(self) -> None:
        """One use is done; the last drops the value and releases what it
        was built on."""
        self.pending -= 1
        if self.pending == 0:
            self.memo = None
            for d in self.deps:
                d.release()


def _value(v: Any) -> Any:
    return v.value() if isinstance(v, (Recipe, Kept)) else v


class _Deferred:
    """A tensor packed while an op runs whose output may get a recipe once
    it returns (a ReLU saves its own result): resolved when the op returns."""
    __slots__ = ("tensor", "version", "target")

    def __init__(self, t: Tensor):
        self.tensor, self.version, self.target = t, t._version, None


def _unpack(packed: Any) -> Tensor:
    if torch.is_grad_enabled():
        raise RuntimeError(_DOUBLE_BACKWARD)
    if isinstance(packed, _Deferred):
        packed = packed.target
    value = packed.value()
    packed.release()
    return value


class _Entry(weakref.ref):
    """A recipe's entry in Session.recipes: a weak reference to the tensor
    it recomputes (the entry goes with the tensor)."""
    __slots__ = ("key", "recipe")


class Session:
    """The saved-tensor hooks of one lean forward and its recipes
    (see the module doc). `depth` counts the ops running now (the lean mode
    enters and leaves them); tensors packed inside are resolved when the
    outermost returns."""

    def __init__(self) -> None:
        # Plain dicts by id(), not torch.utils.weak.WeakIdKeyDictionary: a
        # forward looks up thousands of times, and what is made here lives
        # until backward. That dictionary makes a key object per lookup and
        # several per entry, and so many survivors set off the
        # interpreter's full garbage collection (266 ms on hrnet_w18) every
        # few steps.
        self.recipes: Dict[int, _Entry] = {}  # id(tensor) -> its recipe
        self.kept: Dict[int, Kept] = {}  # id(tensor) -> Kept, its other versions chained
        self.deferred: List[_Deferred] = []
        self.depth = 0
        self.outer: Optional[Tuple[Callable, Callable]] = None
        self._forget = self._drop

    def __enter__(self) -> "Session":
        self.outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        torch._C._autograd._push_saved_tensors_default_hooks(self.pack, _unpack)
        return self

    def __exit__(self, *exc) -> None:
        torch._C._autograd._pop_saved_tensors_default_hooks()
        self.resolve()
        self.recipes = {}
        self.kept = {}
        self._forget = None

    def _drop(self, entry: _Entry) -> None:
        if self.recipes.get(entry.key) is entry:
            del self.recipes[entry.key]

    def _recipe(self, t: Tensor, version: int) -> Optional["Recipe"]:
        entry = self.recipes.get(id(t))
        if entry is not None and entry() is t and entry.recipe.version == version:
            return entry.recipe
        return None

    # -- forward side -------------------------------------------------------

    def ref(self, t: Tensor, version: Optional[int] = None) -> Any:
        """What a recipe reads for tensor `t` (at `version`, default now):
        its own recipe, or the tensor itself, kept if the recipe is packed."""
        recipe = self._recipe(t, t._version if version is None else version)
        return _Raw(t) if recipe is None else recipe

    def register(self, t: Tensor, recipe: Recipe) -> None:
        """From now on `t` (at its current version) is packed as `recipe`,
        unless the recipe is more than MAX_DEPTH recipes deep: then `t` is
        kept as it is. Every block output of a branch is pointwise in the
        one before, and every module's input in the module before, so
        unbounded recipes would chain through the whole network, and the
        first unpack in backward would recompute (and hold) nearly every
        activation at once: eager's peak again."""
        if recipe.depth <= MAX_DEPTH:
            recipe.version = t._version
            entry = _Entry(t, self._forget)
            entry.key, entry.recipe = id(t), recipe
            self.recipes[entry.key] = entry

    def keep(self, t: Tensor, version: int) -> Kept:
        """`t` kept for backward, once per version."""
        first = kept = self.kept.get(id(t))
        while kept is not None and not kept.holds(t, version):
            kept = kept.next
        if kept is None:
            kept = Kept(t, self.outer, version)
            if first is not None and first.holds(t):
                kept.next = first
            self.kept[id(t)] = kept
        return kept

    # -- the hooks ----------------------------------------------------------

    def _packed(self, t: Tensor, version: int) -> Any:
        recipe = self._recipe(t, version)
        if recipe is not None and recipe.keep(self):
            recipe.pending += 1
            return recipe
        return None

    def pack(self, t: Tensor) -> Any:
        if t.is_leaf:
            # a parameter, an input, a buffer or a statistic: never recomputed
            return self.keep(t, t._version)
        found = self._packed(t, t._version)
        if found is not None:
            return found
        if self.depth > 0:
            # possibly the running op's output, whose recipe comes when it
            # returns
            d = _Deferred(t)
            self.deferred.append(d)
            return d
        return self.keep(t, t._version)

    def resolve(self) -> None:
        """Settles what was packed while the ops that just returned ran."""
        for d in self.deferred:
            d.target = self._packed(d.tensor, d.version) or self.keep(d.tensor, d.version)
            d.tensor = None
        self.deferred.clear()


__all__ = ["Kept", "Recipe", "Session"]
