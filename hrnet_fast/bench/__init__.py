"""`hrnet-fast bench`: time an HRNet model eager, converted (fused) and
torch.compile'd, side by side from one process.

Modules, one job each:
    config     -- the benchmark case (what to run) and argument parsing helpers
    models     -- building the model and its input
    timing     -- timers, paired rounds and ratios, host time per call, CUDA-graph replay, percentiles
    bandwidth  -- the memory copy bandwidth a memory-bound figure is compared against
    shapes     -- the exchange shapes of real HRNets (W18/W32/W48, pose/seg, stages 2-4)
    memory     -- peak memory of one call (CUDA allocator or process RSS)
    runner     -- runs one case: variants, warm-up, timing, accuracy
    reporting  -- the terminal table and the JSON file
    plotting   -- the PNG bar chart
"""
from .config import Case, default_cases, parse_size, parse_variants
from .runner import run_case

__all__ = ["Case", "default_cases", "parse_size", "parse_variants", "run_case"]
