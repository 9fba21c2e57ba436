"""Stage configurations of the official HRNet architectures.

Each stage: (num_modules, block, num_blocks per branch, channels per branch).
Stage 1 has one branch of Bottleneck blocks; stages 2-4 use BasicBlocks.
These are the numbers of the official seg/pose/classification configs, so
their checkpoints fit the models built from them.

Example:
    >>> from hrnet_fast.models.configs import ARCHS
    >>> ARCHS["w32"]["stage4"].channels
    (32, 64, 128, 256)
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple


class StageConfig(NamedTuple):
    num_modules: int
    block: str  # "BASIC" or "BOTTLENECK"
    num_blocks: Tuple[int, ...]
    channels: Tuple[int, ...]


def _wide(width: int) -> Dict[str, StageConfig]:
    # w18 ... w64 share the layout; only the base width changes.
    w = width
    return {
        "stage1": StageConfig(1, "BOTTLENECK", (4,), (64,)),
        "stage2": StageConfig(1, "BASIC", (4, 4), (w, 2 * w)),
        "stage3": StageConfig(4, "BASIC", (4, 4, 4), (w, 2 * w, 4 * w)),
        "stage4": StageConfig(3, "BASIC", (4, 4, 4, 4), (w, 2 * w, 4 * w, 8 * w)),
    }


ARCHS: Dict[str, Dict[str, StageConfig]] = {
    "w18_small_v1": {
        "stage1": StageConfig(1, "BOTTLENECK", (1,), (32,)),
        "stage2": StageConfig(1, "BASIC", (2, 2), (16, 32)),
        "stage3": StageConfig(1, "BASIC", (2, 2, 2), (16, 32, 64)),
        "stage4": StageConfig(1, "BASIC", (2, 2, 2, 2), (16, 32, 64, 128)),
    },
    "w18_small_v2": {
        "stage1": StageConfig(1, "BOTTLENECK", (2,), (64,)),
        "stage2": StageConfig(1, "BASIC", (2, 2), (18, 36)),
        "stage3": StageConfig(3, "BASIC", (2, 2, 2), (18, 36, 72)),
        "stage4": StageConfig(2, "BASIC", (2, 2, 2, 2), (18, 36, 72, 144)),
    },
    "w18": _wide(18),
    "w32": _wide(32),
    "w48": _wide(48),
    "w64": _wide(64),
}
