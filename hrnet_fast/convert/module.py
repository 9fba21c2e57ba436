"""FusedExchange: an HRNet module's exchange step as one
`hrnet_fast.exchange` call per output branch.

It owns no parameters or buffers. It keeps a plain (unregistered) reference
to its host HRNet module, the host's exchange read into terms
(hrnet_fast.convert.terms, by hrnet_fast.convert.layouts) that hold the
host's own layers, and its settings. So the host's state_dict is
untouched, `.to()`, `load_state_dict` and DDP keep working, and deepcopy /
pickling copy the host and its FusedExchange together. When modules are
swapped inside the host (e.g. `nn.SyncBatchNorm.convert_sync_batchnorm`),
the terms are read again before the next call.

Which path a call takes:

- eval program: under no_grad or inference mode, without autocast, a trace
  or torch.compile, with every BN of the exchange using running statistics
  and no hooks on its layers, the exchange runs as the program compiled for
  these inputs' signature (hrnet_fast.plan: BN folded into each conv, on the
  CPU the first convs that read one branch merged and 1x1 convs as GEMMs),
  by the Python executor the first time and then, where every row goes to
  the C++ op, as one C++ call made from `__call__`, ahead of nn.Module's
  call path (the C++ executor checks this module's hooks and the global
  ones itself, and everything else the program rests on: a failed check
  sends the call down the path below);
- the source's summands: under torch.jit.trace (and so the legacy ONNX
  exporter) and torch.export, and under torch.compile on the CPU with
  backend "auto", every fuse layer runs as the source runs it and the op's
  definition sums them: a trace or an exported program holds the source's
  own operators (no more of them), and Inductor sees (and fuses) the
  source's graph;
- the terms: anything else (training, grad mode, autocast, traces, hooks).
  In eval each BN is folded into its conv through one FoldCache; with batch
  statistics the BN module is called (by default) or, with
  `batch_stats_in_op = True`, its statistics are computed here exactly as
  nn.BatchNorm2d does (running update included) and the op applies the
  affine. SyncBatchNorm in training is always called as a module so that
  its cross-process statistics stay intact.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> _ = hrnet_fast.convert(m)
    >>> fx = hrnet_fast.fused_modules(m)[0].fused_exchange
    >>> [t.kind for t in fx.terms[0]]
    ['id', 'up']
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..backend import conv_terms_in_kernel, defers_to_compiler
from ..ops import exchange
from ..plan.cache import ProgramCache
from ..plan.compiler import Options, compile_program
from ..plan.guard import generation
from ..plan.native import run as run_native
from ..plan.program import Program
from .folding import FoldCache, cacheable_now
from .layouts import read_terms
from .terms import CallState, IdentityTerm, OpaqueTerm, RowArgs, Term

_is_compiling = torch.compiler.is_compiling
_is_exporting = torch.compiler.is_exporting
_is_tracing = torch.jit.is_tracing
_GLOBAL_HOOK_DICTS = tuple(getattr(torch.nn.modules.module, name) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


def autocast_on(device: torch.device) -> bool:
    """Whether autocast is on for `device` (False for devices autocast does
    not know, such as meta)."""
    return torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)


class FusedExchange(nn.Module):
    """The exchange step of one HRNet module (its `fuse_layers` + ReLU) as
    one `hrnet_fast.exchange` call per output branch; see the module doc for
    which path a call takes.

    Created by `hrnet_fast.convert`, registered on the host as
    `fused_exchange` (it has no parameters, so state_dict is unchanged).

    Example:
        >>> import torch, hrnet_fast
        >>> m = hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3).eval()
        >>> hrnet_fast.convert(m).stage2[0].fused_exchange.terms[0][1].kind
        'up'
    """

    def __init__(self, host: nn.Module, mode: Optional[str] = None, align_corners: Optional[bool] = None,
                 backend: str = "auto", where: str = ""):
        super().__init__()
        d = self.__dict__
        # Plain attributes, not submodules: the host owns the layers.
        d["host"] = host
        d["_requested"] = (mode, align_corners)
        d["where"] = where or type(host).__name__
        d["_backend"] = backend
        # Training with batch statistics: False calls the BN module (ATen's
        # batch norm computes the statistics and the running update in one
        # pass); True computes them here and hands the affine to the op.
        d["batch_stats_in_op"] = False
        d["folds"] = FoldCache()
        d["_eval"] = ProgramCache()
        self._read()

    def _read(self) -> None:
        """(Re)reads the host's exchange into terms; drops what was derived
        from the previous ones."""
        terms, (mode, align) = read_terms(self.host, *self._requested)
        d = self.__dict__
        d["terms"] = terms
        d["mode"] = mode
        d["align_corners"] = bool(align) and mode == "bilinear"
        d["_structure"] = self._structure_now()
        d["_generation"] = generation()
        self._eval.clear()

    def _structure_now(self) -> tuple:
        """The identities of every module, parameter and buffer of the fuse
        layers: what the terms hold on to."""
        fuse = self.host.fuse_layers
        return (tuple(map(id, fuse.modules())), tuple(map(id, fuse.parameters())), tuple(map(id, fuse.buffers())))

    # -- settings -----------------------------------------------------------

    @property
    def backend(self) -> str:
        """The `backend=` of its exchange calls; setting it drops the eval
        programs bound to the previous one."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.__dict__["_backend"] = name
        self._eval.clear()

    @property
    def one_call_eval(self) -> bool:
        """Whether eval programs run as one C++ call once they have run in
        Python (default True). False keeps them in Python, for comparison;
        the outputs are the same."""
        return self._eval.one_call

    @one_call_eval.setter
    def one_call_eval(self, enabled: bool) -> None:
        self._set_eval("one_call", enabled)

    @property
    def eval_program(self) -> bool:
        """Whether eval calls may run as a compiled program (default True).
        False runs the terms in every mode, for comparison."""
        return self._eval.enabled

    @eval_program.setter
    def eval_program(self, enabled: bool) -> None:
        self._set_eval("enabled", enabled)

    def _set_eval(self, setting: str, enabled: bool) -> None:
        setattr(self._eval, setting, bool(enabled))
        self._eval.clear()

    @property
    def program(self) -> Optional[Program]:
        """The eval program that ran last (hrnet_fast.plan), or None."""
        return self._eval.program

    @property
    def one_call(self) -> Optional[tuple]:
        """The C++ form of the eval program that ran last, or None."""
        return self._eval.native

    def extra_repr(self) -> str:
        return f"rows={len(self.terms)}, mode={self.mode!r}, align_corners={self.align_corners}, " \
               f"backend={self.backend!r}"

    def clear_cache(self) -> None:
        """Drop the cached BN folds and eval programs (after `.data` edits,
        which PyTorch's version counters do not show) and read the terms
        again."""
        self.folds.clear()
        self._read()

    def __getstate__(self):
        # Folds and programs are derived data: never pickled.
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["folds"] = FoldCache()
        state["_eval"] = ProgramCache(one_call=self._eval.one_call, enabled=self._eval.enabled)
        return state

    # -- calls --------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        # The eval program's C++ form first, before nn.Module.__call__
        # (whose checks, after the convolutions have pushed the interpreter
        # out of the caches, cost as much as the rest of the call); it
        # returns None when anything it was built for does not hold. Never
        # under torch.compile, which must see the module (checked first).
        if not _is_compiling():
            state = self._eval.native
            if state is not None and self._generation == generation() and len(args) == 1 and not kwargs:
                outs = run_native(state, args[0])
                if outs is not None:
                    return outs
        # Looked up now, not bound at import: torch.fx's tracer patches
        # nn.Module.__call__ while it traces.
        return super().__call__(*args, **kwargs)

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        compiling = _is_compiling()
        if self._generation != generation() and not compiling:
            if self._structure_now() != self._structure:
                self._read()
            else:
                self.__dict__["_generation"] = generation()
        device = xs[0].device
        if (compiling and defers_to_compiler(self.backend, device.type)) or _is_tracing() or _is_exporting():
            return self._as_source(xs)
        autocast = autocast_on(device)
        cacheable = cacheable_now()
        if cacheable and not autocast and not torch.is_grad_enabled():
            outs = self._eval.run(xs, lambda: self._compile(xs), self._own_hook_dicts())
            if outs is not None:
                return outs
        convs_in_op = conv_terms_in_kernel(self.backend, device.type)
        st = CallState(self.folds, self.batch_stats_in_op, autocast, convs_in_op, cacheable, self.where)
        outs = []
        for i, terms in enumerate(self.terms):
            args = RowArgs()
            for term in terms:
                term.contribute(xs[term.j], xs[i], st, args)
            outs.append(self._call(args, xs[i]))
        return outs

    def _compile(self, xs: Sequence[Tensor]) -> Optional[Program]:
        cpu = xs[0].device.type == "cpu"
        convs_in_op = conv_terms_in_kernel(self.backend, xs[0].device.type)
        folds = self.folds
        options = Options(self.mode, self.align_corners, self.backend,
                          fold=lambda conv, bn, key, dtype: folds.get(key, conv, bn, dtype, True),
                          gemm_1x1=cpu, merge=cpu and not convs_in_op, convs_in_kernel=convs_in_op, where=self.where)
        return compile_program(self.terms, xs, options)

    def _own_hook_dicts(self) -> Tuple[dict, ...]:
        """The hook dicts nn.Module.__call__ reads for this module: the one
        C++ call runs only while they are empty."""
        return (self._forward_hooks, self._forward_pre_hooks, self._backward_hooks, self._backward_pre_hooks,
                *_GLOBAL_HOOK_DICTS)

    def _as_source(self, xs: List[Tensor]) -> List[Tensor]:
        """Every summand as the source model computes it (its fuse layer
        run as a module), summed and ReLU'd by the definition: what a trace
        or an export records is the unconverted model's graph, and under
        torch.compile on the CPU the compiler fuses it as well (folding in
        the graph, merged convs and GEMM-form 1x1 convs only slowed the
        compiled model)."""
        st = CallState(self.folds, False, False, False, False, self.where)
        outs = []
        for i, terms in enumerate(self.terms):
            args = RowArgs()
            for term in terms:
                source = term if isinstance(term, (IdentityTerm, OpaqueTerm)) else term.opaque
                source.contribute(xs[term.j], xs[i], st, args)
            outs.append(self._call(args, xs[i]))
        return outs

    def _call(self, args: RowArgs, like: Tensor) -> Tensor:
        args.promote()
        return exchange(args.inputs, args.scales if args.affine else None, args.shifts if args.affine else None,
                        convs=args.convs, size=(like.shape[-2], like.shape[-1]), mode=self.mode,
                        align_corners=self.align_corners, relu=True, backend=self.backend)


__all__ = ["FusedExchange", "Term", "autocast_on"]
