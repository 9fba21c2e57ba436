"""`hrnet_fast.optimize(model)`: HRNet inference with every BatchNorm folded,
fused convolution epilogues, the fused exchange, channels_last / bf16 on
CUDA and CUDA graphs per input shape, built in seconds.

    settings.py    the decisions: device, dtype, layout, graphs, platform
    example.py     the example input against the model's first convolution
    copying.py     the private copy whose tensors alias the source's
    graph.py       torch.fx trace per module, BN folding, epilogue fusion
    convs.py       one folded conv + epilogue per platform (oneDNN, cuDNN, plain)
    exchange.py    an HRNet module: branches + one fused exchange call per row
    cudagraphs.py  the bounded, shape-keyed CUDA graph cache
    module.py      OptimizedModule: checks, dtype/layout in and out, graphs
    report.py      what was folded, fused and left
    api.py         optimize()
"""
from .api import optimize
from .module import OptimizedModule, StaleSourceError
from .report import Report

__all__ = ["optimize", "OptimizedModule", "Report", "StaleSourceError"]
