"""Whole-model rewrite: trace each module's forward with torch.fx, fold
every BatchNorm into the convolution before it and fuse the convolutions'
epilogues, by the dataflow, not by names.

`Builder.build(module)` returns what runs in `module`'s place:

- an HRNet module (hrnet_fast.convert.layouts.is_hr_module) without hooks: an
  OptimizedHRModule (its branches built by this Builder, its exchange one
  fused call per output branch; hrnet_fast.optimize.exchange);
- a module whose forward torch.fx can trace: a GraphModule of that forward,
  rewritten (below). HRNet modules, modules with hooks and torch.nn's own
  layers stay single calls (leaves) in the trace; an HRNet module's call
  yields a list of its outputs, so the Python code around it (lists,
  indexing, zip, enumerate) traces as it runs;
- anything else (forward cannot be traced, or the module has hooks, which
  must fire and see what they saw): the module itself, running its own
  forward, with each child replaced by what this Builder builds for it.

The rewrite, on the traced graph of one forward:

    conv -> BN                     one conv with the BN folded in, where the
                                   conv's output feeds only the BN and the BN
                                   uses running statistics
    conv -> ReLU                   the conv with a ReLU epilogue
    conv + r [-> ReLU]             the conv with a residual-add (and ReLU)
                                   epilogue, e.g. every BasicBlock's and
                                   Bottleneck's last conv and its shortcut
    Identity / Dropout (eval)      removed

Anything else stays as it is; a BN that cannot fold (no conv right before it,
as in BN -> ReLU -> conv, or no running statistics, or hooks) is counted in
the report.
"""
from __future__ import annotations

import operator
from typing import Dict, Optional, Set

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..convert.folding import fold
from ..convert.layers import has_hooks, is_batchnorm, is_conv
from ..convert.layouts import is_hr_module
from .convs import Epilogue, FusedConv, make_conv
from .exchange import OptimizedHRModule
from .foldable import foldable_bn_reason
from .report import Report
from .settings import Settings

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class _Tracer(fx.Tracer):
    """torch.fx's tracer with HRNet modules and hooked modules as leaves; an
    HRNet module's call yields a Python list of per-output proxies."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_hr_module(m) or has_hooks(m):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if is_hr_module(m) and isinstance(out, fx.Proxy):
            return [out[i] for i in range(len(m.fuse_layers))]
        return out


class _Spec:
    """A convolution being rewritten: its folded weight and bias so far and
    its epilogue."""
    __slots__ = ("conv", "weight", "bias", "epilogue", "other", "folded")

    def __init__(self, conv: nn.Conv2d):
        self.conv = conv
        self.weight = conv.weight
        self.bias = conv.bias
        self.epilogue = Epilogue.NONE
        self.other: Optional[fx.Node] = None
        self.folded = False


def _is_relu(node: fx.Node, modules: Dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules.get(node.target)
        return type(m) is nn.ReLU and not has_hooks(m)
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return len(node.args) >= 1 and isinstance(node.args[0], fx.Node) and all(
            k == "inplace" for k in node.kwargs) and len(node.args) <= (2 if node.target is F.relu else 1)
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return len(node.args) == 1 and not node.kwargs
    return False


def _add_operands(node: fx.Node):
    """(a, b) for a plain two-tensor addition node (no alpha), else None."""
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        pass
    elif node.op == "call_method" and node.target in _ADD_METHODS:
        pass
    else:
        return None
    if node.kwargs or len(node.args) != 2:
        return None
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return None
    return a, b


class Builder:
    """Builds the optimized counterpart of modules for one `Settings`,
    counting what it does in one `Report`."""

    def __init__(self, settings: Settings, report: Report):
        self.settings = settings
        self.report = report

    # -- entry -----------------------------------------------------------

    def build(self, module: nn.Module, name: str = "") -> nn.Module:

        if is_hr_module(module) and not has_hooks(module):
            try:
                return OptimizedHRModule(module, self, name)
            except ValueError as exc:  # a layout whose exchange cannot be read
                self.report.unrecognised.append(f"{name or type(module).__name__}: exchange not fused ({exc})")
                return self._children_only(module, name)
        if has_hooks(module):
            self.report.hooked.append(name or type(module).__name__)
            return self._children_only(module, name)
        if is_conv(module):
            return self._single_conv(module)
        if type(module).forward is nn.Module.forward or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            return self._children_only(module, name)  # a container that is never called
        if _Tracer().is_leaf_module(module, ""):
            return module  # a torch.nn layer: runs as it is
        try:
            graph = _Tracer().trace(module)
        except Exception as exc:  # noqa: BLE001 - any trace failure means "run it as it is"
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            self.report.untraced.append(f"{name or type(module).__name__} ({type(module).__name__}): {reason}")
            return self._children_only(module, name)
        gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
        self._rewrite(gm, name)
        return gm

    def _children_only(self, module: nn.Module, name: str) -> nn.Module:
        """`module` running its own forward, its children built."""
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            built = self.build(child, f"{name}.{child_name}" if name else child_name)
            if built is not child:
                # Direct assignment: no module-registration hooks fire for
                # this private copy.
                module._modules[child_name] = built
        for m in module._modules.values():
            if m is not None and is_batchnorm(m):
                self.report.left_bn("inside a module that runs its own forward (not traced, or hooked)")
        return module

    def _single_conv(self, conv: nn.Conv2d) -> FusedConv:
        spec = _Spec(conv)
        self.report.convs += 1
        return self._materialise(spec)

    # -- the rewrite -----------------------------------------------------

    def _rewrite(self, gm: fx.GraphModule, name: str) -> None:
        graph = gm.graph
        modules = dict(gm.named_modules())
        specs: Dict[fx.Node, _Spec] = {}

        # A conv whose tensors the forward also reads directly (get_attr)
        # keeps its module: its weight must stay what it is.
        read = [str(n.target) for n in graph.nodes if n.op == "get_attr"]
        for node in list(graph.nodes):
            if node.op != "call_module":
                continue
            m = modules[node.target]
            if any(r.startswith(f"{node.target}.") for r in read):
                continue
            if (type(m) is nn.Identity or isinstance(m, _DROPOUTS)) and not has_hooks(m) and node.args:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
            elif is_conv(m) and not has_hooks(m) and len(node.args) == 1 and not node.kwargs:
                specs[node] = _Spec(m)
                self.report.convs += 1

        # conv -> BN
        for node in list(graph.nodes):
            if node.op != "call_module" or not is_batchnorm(modules[node.target]):
                continue
            bn = modules[node.target]
            src = node.args[0] if node.args else None
            why = foldable_bn_reason(bn)
            if why is None and not (src in specs and len(src.users) == 1 and not specs[src].folded):
                why = "no convolution right before it"
            if why is None and (len(node.args) != 1 or node.kwargs):
                why = "called with extra arguments"
            if why is not None:
                self.report.left_bn(why)
                continue
            spec = specs[src]
            spec.weight, spec.bias = fold(spec.conv, bn, torch.promote_types(spec.conv.weight.dtype, torch.float32))
            spec.folded = True
            self.report.bns_folded += 1
            node.replace_all_uses_with(src)
            graph.erase_node(node)

        # conv -> ReLU
        for node in list(graph.nodes):
            if not _is_relu(node, modules):
                continue
            src = node.args[0]
            if src in specs and len(src.users) == 1 and specs[src].epilogue is Epilogue.NONE:
                specs[src].epilogue = Epilogue.RELU
                node.replace_all_uses_with(src)
                graph.erase_node(node)

        # conv + r [-> ReLU]
        outputs = {n for n in graph.nodes if n.op == "output"}
        order = {n: k for k, n in enumerate(graph.nodes)}
        for node in list(graph.nodes):
            operands = _add_operands(node)
            if operands is None:
                continue
            a, b = operands
            chosen = None
            # The later of two candidate convs becomes the fused one: the
            # other is then already computed.
            for conv_node, other in sorted(((a, b), (b, a)), key=lambda p: -order[p[0]]):
                s = specs.get(conv_node)
                if s is not None and s.epilogue is Epilogue.NONE and len(conv_node.users) == 1 \
                        and other is not conv_node:
                    chosen = (conv_node, other)
                    break
            if chosen is None:
                continue
            conv_node, other = chosen
            spec = specs[conv_node]
            spec.epilogue, spec.other = Epilogue.ADD, other
            users = list(node.users)
            relu = users[0] if len(users) == 1 and _is_relu(users[0], modules) else None
            node.prepend(conv_node)  # after `other`, which is defined before the add
            conv_node.args = (conv_node.args[0], other)
            node.replace_all_uses_with(conv_node)
            graph.erase_node(node)
            if relu is not None:
                spec.epilogue = Epilogue.ADD_RELU
                relu.replace_all_uses_with(conv_node)
                graph.erase_node(relu)
            # Overwrite `other` in place only where it is a fresh result of
            # another rewritten conv that nothing reads afterwards: every
            # other reader is a rewritten conv (convs read, they make no
            # views) that runs before this one, and it is not returned.
            order = {n: k for k, n in enumerate(graph.nodes)}
            readers = [u for u in other.users if u is not conv_node]
            conv_node.meta["hrnet_fast_inplace"] = (
                other in specs and other is not conv_node.args[0] and not (set(other.users) & outputs)
                and all(u in specs and order[u] < order[conv_node] for u in readers))

        used: Set[str] = set()
        for node, spec in specs.items():
            fused = self._materialise(spec)
            fused.inplace = bool(node.meta.get("hrnet_fast_inplace", False)) and spec.epilogue.adds
            if node.target in used:
                # The same conv called twice: each call gets its own module.
                node.target = _free_name(gm, str(node.target).replace(".", "_"))
            used.add(node.target)
            _set_submodule(gm, node.target, fused)
            ep = spec.epilogue
            if ep is not Epilogue.NONE:
                self.report.epilogues[ep.value] = self.report.epilogues.get(ep.value, 0) + 1

        # The other leaves: HRNet modules and hooked modules are built;
        # torch.nn's layers run as they are.
        for node in graph.nodes:
            if node.op != "call_module" or node.target in used:
                continue
            used.add(node.target)
            m = gm.get_submodule(node.target)
            if is_hr_module(m) or has_hooks(m):
                new = self.build(m, f"{name}.{node.target}" if name else node.target)
                if new is not m:
                    _set_submodule(gm, node.target, new)

        graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()

    def _materialise(self, spec: _Spec) -> FusedConv:
        return self.conv(spec.conv, spec.weight, spec.bias, spec.epilogue)

    def conv(self, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor],
             epilogue: Epilogue = Epilogue.NONE) -> FusedConv:
        """The platform's FusedConv with `conv`'s geometry and the given
        (folded) weight and bias, cast to the compute dtype and device."""
        s = self.settings
        weight = weight.detach().to(device=s.device, dtype=s.dtype)
        bias = None if bias is None else bias.detach().to(device=s.device, dtype=s.dtype)
        return make_conv(s.platform, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                         epilogue, s.channels_last)


def _free_name(root: nn.Module, base: str) -> str:
    k = 1
    while f"{base}_{k}" in root._modules:
        k += 1
    return f"{base}_{k}"


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    """Put `module` at dotted path `target` under `root` (direct dict writes:
    no registration hooks for a private copy)."""
    *path, last = target.split(".")
    parent = root
    for p in path:
        parent = parent._modules[p]
    parent._modules[last] = module
