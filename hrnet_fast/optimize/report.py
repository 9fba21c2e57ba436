"""What `optimize` did to a model, counted: `optimized.report`.

Example:
    >>> from hrnet_fast.optimize.report import Report
    >>> r = Report(platform="plain", device="cpu", dtype="torch.float64", channels_last=False, cuda_graph=False)
    >>> r.bns_folded, r.summary().splitlines()[0]
    (0, 'platform plain on cpu, torch.float64, channels_last=False, cuda_graph=False')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Report:
    """Counts of what was folded, fused and left as it is.

    bns_folded:       BatchNorms folded into the convolution before them
    bns_left:         BatchNorms that run as they are; `bn_reasons` says why
                      (e.g. BN -> ReLU -> conv, no running statistics, hooks)
    convs:            convolutions run by the platform's fused form
    epilogues:        fused epilogues by kind ("relu", "add", "add_relu")
    exchange_modules: HRNet modules whose exchange runs as fused calls
    exchange_rows:    fused exchange calls (one per output branch)
    opaque_terms:     exchange summands that run as their own modules
    untraced:         modules whose forward could not be traced (they run
                      their own forward; their children are optimized)
    hooked:           modules with hooks (run as modules so the hooks fire)
    unrecognised:     anything else left as it is, with the reason
    source_training:  the source model (or a module in it) was in training
                      mode: what was built computes model.eval()'s function
                      all the same (running BatchNorm statistics, no dropout)
    """
    platform: str
    device: str
    dtype: str
    channels_last: bool
    cuda_graph: bool
    bns_folded: int = 0
    bns_left: int = 0
    bn_reasons: Dict[str, int] = field(default_factory=dict)
    convs: int = 0
    epilogues: Dict[str, int] = field(default_factory=dict)
    exchange_modules: int = 0
    exchange_rows: int = 0
    opaque_terms: int = 0
    untraced: List[str] = field(default_factory=list)
    hooked: List[str] = field(default_factory=list)
    unrecognised: List[str] = field(default_factory=list)
    source_training: bool = False
    setup_s: float = 0.0

    def left_bn(self, why: str) -> None:
        self.bns_left += 1
        self.bn_reasons[why] = self.bn_reasons.get(why, 0) + 1

    @property
    def fused_epilogues(self) -> int:
        return sum(self.epilogues.values())

    def summary(self) -> str:
        lines = [f"platform {self.platform} on {self.device}, {self.dtype}, channels_last={self.channels_last}, "
                 f"cuda_graph={self.cuda_graph}",
                 f"BatchNorms folded {self.bns_folded}, left {self.bns_left}"
                 + (f" ({', '.join(f'{k}: {v}' for k, v in self.bn_reasons.items())})" if self.bn_reasons else ""),
                 f"convolutions {self.convs}, fused epilogues {self.fused_epilogues} "
                 f"({', '.join(f'{k}: {v}' for k, v in sorted(self.epilogues.items())) or 'none'})",
                 f"fused exchange: {self.exchange_modules} modules, {self.exchange_rows} rows, "
                 f"{self.opaque_terms} summands run as modules"]
        for title, items in (("not traced", self.untraced), ("hooked", self.hooked),
                             ("unrecognised", self.unrecognised)):
            if items:
                lines.append(f"{title}: " + "; ".join(items))
        if self.source_training:
            lines.append("source in training mode: evaluated as model.eval() (running BatchNorm statistics, "
                         "no dropout)")
        lines.append(f"setup {self.setup_s:.2f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
