"""`hrnet-fast bench`: time an HRNet model eager, converted (fused) and
torch.compile'd, side by side from one process.

Modules, one job each:
    config     -- the benchmark case (what to run) and argument parsing helpers
    models     -- building the model and its input
    timing     -- timers, paired rounds, percentiles
    memory     -- peak memory of one call (CUDA allocator or process RSS)
    runner     -- runs one case: variants, warm-up, timing, accuracy
    reporting  -- the terminal table and the JSON file
    plotting   -- the PNG bar chart
"""
from .config import Case, default_cases, parse_size, parse_variants
from .runner import run_case

__all__ = ["Case", "default_cases", "parse_size", "parse_variants", "run_case"]
