"""FusedExchange: an HRNet module's exchange step as one
`hrnet_fast.exchange` call per output branch.

It owns no parameters or buffers. It keeps a plain (unregistered) reference
to its host HRNet module and the host's exchange compiled into term objects
(hrnet_fast.terms, by hrnet_fast.layouts) that hold the host's own layers.
So the host's state_dict is untouched, `.to()`, `load_state_dict` and DDP
keep working, and deepcopy / pickling copy the host and its FusedExchange
together. When modules are swapped inside the host (e.g.
`nn.SyncBatchNorm.convert_sync_batchnorm`), the terms are compiled again on
the next call.

BatchNorm: eval uses running statistics, folded into the convs through one
FoldCache (hrnet_fast.folding: recomputed when a folded tensor changes
through PyTorch; after `.data` edits call `clear_cache()` or convert
again). In training (batch statistics) the BN module is called by default;
with `batch_stats_in_op = True` the statistics are computed here exactly as
nn.BatchNorm2d does (running update included) and the op applies the
affine. SyncBatchNorm in training is always called as a module so its
cross-process statistics stay intact.

In eval on the CPU, the first convs that read the same branch run as one
conv (hrnet_fast.shared_source). In eval under no_grad the exchange is
compiled to folded weights (hrnet_fast.inference_rows) and, after its first
call, runs as one C++ call (hrnet_fast.native_rows) from `__call__`, ahead
of nn.Module's own call path, whose hooks it checks itself.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> _ = hrnet_fast.convert(m)
    >>> isinstance(hrnet_fast.fused_modules(m)[0].fused_exchange, hrnet_fast.FusedExchange)
    True
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .backend import conv_terms_in_kernel, defers_to_compiler
from .folding import FoldCache, cacheable_now
from .inference_rows import InferenceRows, _eligible, signature
from .layouts import compile_rows
from .native_rows import NativeRows, compile_rows as compile_native, run_rows
from .ops import bind_exchange, exchange
from .shared_source import merged_first_convs, shared_sources
from .terms import CallState, IdentityTerm, OpaqueTerm, RowArgs, Term

# Bumped whenever any module registers a submodule, parameter or buffer
# anywhere: a swapped layer or tensor (SyncBatchNorm conversion, a new
# Parameter, load_state_dict(assign=True)) makes every FusedExchange compile
# its terms again before its next call.
_GENERATION = [0]


def _registered(module, name, value):
    _GENERATION[0] += 1


torch.nn.modules.module.register_module_module_registration_hook(_registered)
torch.nn.modules.module.register_module_parameter_registration_hook(_registered)
torch.nn.modules.module.register_module_buffer_registration_hook(_registered)

_is_compiling = torch.compiler.is_compiling
_GLOBAL_HOOK_DICTS = tuple(getattr(torch.nn.modules.module, name) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


class FusedExchange(nn.Module):
    """The exchange step of one HRNet module (its `fuse_layers` + ReLU) as
    one `hrnet_fast.exchange` call per output branch.

    Created by `hrnet_fast.convert`; registered on the host as
    `fused_exchange` (it has no parameters, so state_dict is unchanged) and
    the host's forward is routed to `host_forward`.

    Example:
        >>> import torch, hrnet_fast
        >>> m = hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3).eval()
        >>> hrnet_fast.convert(m).stage2[0].fused_exchange.plan[0][1].kind
        'up'
    """

    def __init__(self, host: nn.Module, mode: Optional[str] = None, align_corners: Optional[bool] = None,
                 backend: str = "auto", copy_branches_in_place: bool = True):
        super().__init__()
        # A plain attribute, not a submodule: the host owns the parameters.
        self.__dict__["host"] = host
        self.__dict__["_backend"] = backend
        self.__dict__["_one_call_eval"] = True
        self.copy_branches_in_place = copy_branches_in_place
        # Training with batch statistics: False calls the BN module (ATen's
        # batch norm computes the statistics and the running update in one
        # pass; measured faster on the CPU than var_mean + affine in the op,
        # see benchmarks/RESULTS.md); True computes them here and hands the
        # affine to the op, saving the normalised tensor's memory pass.
        self.batch_stats_in_op = False
        self.folds = FoldCache()
        self._requested = (mode, align_corners)
        self._compile()

    def _compile(self) -> None:
        rows, (mode, align) = compile_rows(self.host, *self._requested)
        self.__dict__["rows"] = rows
        self.mode = mode
        self.align_corners = bool(align) and mode == "bilinear"
        self.__dict__["shared_sources"] = shared_sources(rows)
        self.__dict__["_inference"] = None  # (signature, InferenceRows) of the last eval call
        self._forget_one_call(self.__dict__)
        self.__dict__["_structure"] = self._structure_now()
        self._generation = _GENERATION[0]

    def _structure_now(self) -> tuple:
        """The identities of every module, parameter and buffer of the fuse
        layers: what the compiled terms hold on to."""
        fuse = self.host.fuse_layers
        return (tuple(map(id, fuse.modules())), tuple(map(id, fuse.parameters())), tuple(map(id, fuse.buffers())))

    def _refresh(self) -> None:
        """Something registered a module, parameter or buffer somewhere:
        compile again only if it was one of ours."""
        if self._structure_now() != self._structure:
            self._compile()
        else:
            self._generation = _GENERATION[0]

    @staticmethod
    def _forget_one_call(attrs: dict) -> None:
        """Drops the one-call form of the eval rows from `attrs` (the
        module's __dict__ or its pickled state): the NativeRows, its
        run_rows state (kept apart so that a call reads one attribute), and
        the rows it was compiled from."""
        attrs["_native_rows"] = attrs["_one_call"] = attrs["_one_call_rows"] = None

    @property
    def backend(self) -> str:
        """The `backend=` of its exchange calls; setting it drops the
        inference rows bound to the previous one."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.__dict__["_backend"] = name
        self.__dict__["_inference"] = None
        self._forget_one_call(self.__dict__)

    @property
    def one_call_eval(self) -> bool:
        """Whether eval calls under no_grad run as one C++ call once their
        rows are compiled (hrnet_fast.native_rows; default True). False
        keeps them in Python, for comparison; the outputs are the same."""
        return self._one_call_eval

    @one_call_eval.setter
    def one_call_eval(self, enabled: bool) -> None:
        self.__dict__["_one_call_eval"] = bool(enabled)
        self._forget_one_call(self.__dict__)

    @property
    def native_rows(self) -> Optional[NativeRows]:
        """The one-call C++ form of the last eval call's rows
        (hrnet_fast.native_rows), or None."""
        return self._native_rows

    @property
    def plan(self) -> List[List[Term]]:
        """The terms of every output row."""
        return self.rows

    def extra_repr(self) -> str:
        return f"rows={len(self.rows)}, mode={self.mode!r}, align_corners={self.align_corners}, " \
               f"backend={self.backend!r}"

    def clear_cache(self) -> None:
        """Drop the cached BN folds (after `.data` edits, which PyTorch's
        version counters do not show) and compile the terms again."""
        self.folds.clear()
        self._compile()

    def __getstate__(self):
        # Folds are derived data: never pickled.
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["folds"] = FoldCache()
        state["_inference"] = None
        self._forget_one_call(state)
        return state

    # -- host forward -----------------------------------------------------

    def host_forward(self, x: List[Tensor]) -> List[Tensor]:
        """Replacement for the host's forward: branches, then the exchange."""
        host = self.host
        if host.num_branches == 1:
            return [host.branches[0](x[0])]
        if self.copy_branches_in_place:
            # timm and the official repositories write the branch outputs
            # back into the caller's list; keep that visible behaviour.
            for i, branch in enumerate(host.branches):
                x[i] = branch(x[i])
            xs = x
        else:
            xs = [branch(t) for branch, t in zip(host.branches, x)]
        return self(xs)

    def __call__(self, *args, **kwargs):
        # Eval's fast path: the whole exchange as one C++ call, before
        # nn.Module.__call__ (whose checks, after the convolutions have
        # pushed the interpreter out of the caches, cost as much as the rest
        # of the call). The call checks the grad, inference, autocast and
        # trace modes, its inputs, the BN modes and every hook nn.Module
        # would run, this module's and the global ones, and returns None
        # when anything does not hold (hrnet_fast.native_rows). Never under
        # torch.compile, which must see the module (checked first). A
        # module.compile() of this module alone would be bypassed here, to
        # the same result: there is nothing left in the call to compile.
        if not _is_compiling():
            state = self._one_call
            if state is not None and self._generation == _GENERATION[0] and len(args) == 1 and not kwargs:
                outs = run_rows(state, args[0])
                if outs is not None:
                    return outs
        # Looked up now, not bound at import: torch.fx's tracer patches
        # nn.Module.__call__ while it traces.
        return super().__call__(*args, **kwargs)

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        compiling = _is_compiling()
        if self._generation != _GENERATION[0] and not compiling:
            self._refresh()
        device = xs[0].device
        if compiling and defers_to_compiler(self.backend, device.type):
            return self._as_source(xs)
        autocast = torch.is_autocast_enabled(device.type)
        convs_in_op = conv_terms_in_kernel(self.backend, device.type)
        cacheable = cacheable_now()
        if cacheable and not autocast and not torch.is_grad_enabled():
            rows = self._inference_rows(xs, convs_in_op, device.type == "cpu" and not convs_in_op)
            if rows is not None:
                outs = rows.run(xs, self._exchange, self._bind)
                if self._one_call_rows is not rows and self._one_call_eval:
                    # After a first run of these rows: every runner is bound.
                    native = compile_native(rows, xs, self._own_hook_dicts())
                    self.__dict__["_native_rows"] = native
                    self.__dict__["_one_call"] = None if native is None else native.state
                    self.__dict__["_one_call_rows"] = rows
                return outs
        first: Dict[Tuple[int, int], Tensor] = {}
        if self.shared_sources and device.type == "cpu" and not autocast and not convs_in_op:
            first = merged_first_convs(self.shared_sources, xs, self.folds, cacheable)
        st = CallState(self.folds, self.batch_stats_in_op, autocast, convs_in_op, first, cacheable)
        outs = []
        for i, terms in enumerate(self.rows):
            target = (xs[i].shape[-2], xs[i].shape[-1])
            args = RowArgs()
            for term in terms:
                term.contribute(xs[term.j], target, st, args)
            outs.append(self._call(args, target))
        return outs

    def _own_hook_dicts(self) -> Tuple[dict, ...]:
        """The hook dicts nn.Module.__call__ reads for this module: the one
        C++ call runs only while they are empty."""
        return (self._forward_hooks, self._forward_pre_hooks, self._backward_hooks, self._backward_pre_hooks,
                *_GLOBAL_HOOK_DICTS)

    def _as_source(self, xs: List[Tensor]) -> List[Tensor]:
        """Every summand as the source model computes it (its fuse layer
        run as a module), summed and ReLU'd by the definition: under
        torch.compile on the CPU the compiler then sees the unconverted
        model's graph and fuses it as well (folding in the graph, merged
        convs and GEMM-form 1x1 convs only slowed the compiled model)."""
        outs = []
        for i, terms in enumerate(self.rows):
            target = (xs[i].shape[-2], xs[i].shape[-1])
            args = RowArgs()
            for term in terms:
                source = term if isinstance(term, (IdentityTerm, OpaqueTerm)) else term.opaque
                source.contribute(xs[term.j], target, None, args)
            outs.append(self._call(args, target))
        return outs

    def _inference_rows(self, xs: List[Tensor], convs_in_op: bool, merge: bool) -> Optional[InferenceRows]:
        """The compiled inference rows for these inputs, built or reused;
        None when the general path must run (hrnet_fast.inference_rows)."""
        sig = signature(xs, convs_in_op)
        cached = self._inference
        if cached is not None and cached[0] == sig and cached[1].valid():
            return cached[1]
        if not _eligible(self.rows, xs):
            return None
        rows = InferenceRows(self.rows, self.shared_sources, xs, convs_in_op, merge)
        if not rows.valid():  # hooks: the general path runs hooked layers as modules
            return None
        self.__dict__["_inference"] = (sig, rows)
        return rows

    def _exchange(self, inputs: List[Tensor], convs, target: Tuple[int, int]) -> Tensor:
        return exchange(inputs, None, None, convs=convs, size=target, mode=self.mode,
                        align_corners=self.align_corners, relu=True, backend=self.backend)

    def _bind(self, inputs: List[Tensor], convs, target: Tuple[int, int]):
        return bind_exchange(inputs, convs, target, self.mode, self.align_corners, True, self.backend)

    def _call(self, args: RowArgs, target: Tuple[int, int]) -> Tensor:
        inputs, convs = args.inputs, args.convs
        # The unconverted sum promotes dtypes (e.g. float32 + bfloat16 under
        # autocast); the op wants one dtype, so cast to the promoted one.
        dtype = inputs[0].dtype
        mixed = False
        for t in inputs:
            if t.dtype != dtype:
                dtype, mixed = torch.promote_types(dtype, t.dtype), True
        for a, _, _ in convs:
            if a.dtype != dtype:
                dtype, mixed = torch.promote_types(dtype, a.dtype), True
        if mixed:
            inputs = [t if t.dtype == dtype else t.to(dtype) for t in inputs]
            convs = [(a.to(dtype), w.to(dtype), None if b is None else b.to(dtype)) for a, w, b in convs]
        scales = args.scales if args.affine else None
        shifts = args.shifts if args.affine else None
        return exchange(inputs, scales, shifts, convs=convs, size=target, mode=self.mode,
                        align_corners=self.align_corners, relu=True, backend=self.backend)
