"""Regenerate the Triton backend's shipped tuning table
(hrnet_fast/triton/tuning_table.py).

The table's keys are the ones the HRNet shapes reach (the same calls
hrnet_fast.triton.aot_check compiles: converted stage-4 rows of W18/W32/W48,
seg at a 512x1024 input, batch 8, bf16, channels_last). On a GPU, for every
key, each candidate block shape (tuning.candidates) is forced in turn, the
call that reaches the key is captured in a CUDA graph and replayed, and the
fastest candidate whose compiled kernel does not spill wins. Kernel time
comes from graph replay (the device's time, not the host's), median of
--rounds rounds of --reps replays.

    python benchmarks/tune_triton.py                      # GPU: measure, write the table
    python benchmarks/tune_triton.py --dry-run            # GPU: measure, print only
    python benchmarks/tune_triton.py --seed-from-heuristic  # no GPU: the heuristic's choices

Without a GPU only --seed-from-heuristic runs: the table then says so in
SOURCE, and lookups give exactly what the heuristic would. Runs for many
minutes on a GPU (one compile per candidate): not part of make gpu-check.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pprint
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hrnet_fast.contract import saved_layout  # noqa: E402
from hrnet_fast.bench import timing  # noqa: E402
from hrnet_fast.triton import aot_check, backward, conv_kernel, forward, tuning  # noqa: E402

TABLE_PATH = os.path.join(ROOT, "hrnet_fast", "triton", "tuning_table.py")
KERNEL_OF = {"fwd": forward.exchange_fwd_kernel, "bwd_rows": backward.exchange_bwd_rows_kernel,
             "bwd_cols": backward.exchange_bwd_cols_kernel, "bwd_reduce": backward.exchange_bwd_reduce_kernel,
             "conv": conv_kernel.exchange_conv_kernel}


def table_keys() -> Dict[str, Tuple[str, dict, str]]:
    """key -> (kernel, heuristic config, name of the call that reaches it),
    from the calls aot_check compiles for the table, run on meta tensors."""
    found: Dict[str, Tuple[str, dict, str]] = {}
    real_choose = tuning._choose
    current = [""]

    def choose(kernel, table_key, heuristic, interpret=None):
        found.setdefault(table_key, (kernel, dict(heuristic), current[0]))
        return real_choose(kernel, table_key, heuristic, None)

    launches: List[tuple] = []
    tuning._choose = choose
    try:
        with aot_check._recording(launches, set()):
            for name, call in aot_check.table_calls():
                current[0] = name
                call()
    finally:
        tuning._choose = real_choose
    return found


def write_table(table: Dict[str, dict], source: str, path: str = TABLE_PATH) -> None:
    body = pprint.pformat(table, width=110, sort_dicts=True)
    with open(path, "w") as f:
        f.write('"""Shipped launch configurations, keyed kernel | dtype | channels | size\n'
                'bucket | input pattern (see tuning.py). Written by benchmarks/tune_triton.py;\n'
                'do not edit by hand.\n"""\n')
        f.write("SOURCE = (\n" + "".join(f"    {line!r}\n" for line in _wrap(source)) + ")\n")
        f.write(f"TABLE = {body}\n")


def _wrap(text: str, width: int = 100) -> List[str]:
    """`text` in pieces of at most `width` characters, at spaces, each but
    the last ending with its space (so the pieces concatenate back)."""
    import textwrap

    return textwrap.wrap(text, width, drop_whitespace=False) or [""]


# ---- measuring (GPU) -----------------------------------------------------------

def cuda_call(name: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    """(forward, backward) closures for the table call `name` on CUDA
    tensors; backward is a no-op for conv rows (their backward is ATen's)."""
    import hrnet_fast

    arch, _, row = name.split()[:3]
    row = int(row)
    case = dict(aot_check.TABLE_CASE)
    torch.manual_seed(0)

    def real(t):
        if t is None:
            return None
        r = torch.randn(t.shape, device="cuda").to(t.dtype)
        return r.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and aot_check.slots.is_cl(t) else r

    inputs, scales, shifts, terms = aot_check.hrnet_row(arch, row, convs=True, mode="bilinear", **case)
    xs, ss, bs = [real(t) for t in inputs], [real(t) for t in scales], [real(t) for t in shifts]
    convs = [(real(a), real(w).contiguous(memory_format=torch.channels_last) * 0.05, real(b)) for a, w, b in terms]
    lowered = aot_check.hrnet_row(arch, row, convs=False, mode="bilinear", **case)
    lx, ls, lb = [[real(t) for t in group] for group in lowered[:3]]

    def conv_forward():
        hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")

    y = hrnet_fast.exchange(lx, ls, lb, mode="bilinear", backend="triton")
    grad = torch.randn_like(y)
    scale_of = [k for k, s in enumerate(ls) if s is not None]
    kept = [x if s is not None else None for x, s in zip(lx, ls)]  # what autograd keeps
    sizes, cl = saved_layout(lx)

    def lowered_forward():
        hrnet_fast.exchange(lx, ls, lb, mode="bilinear", backend="triton")

    def lowered_backward():
        torch.ops.hrnet_fast.exchange_triton_backward(grad, y, kept, sizes, cl, [ls[k] for k in scale_of], scale_of,
                                                      [], [], "bilinear", False, True)

    return (conv_forward if convs else lowered_forward), (lambda: None) if convs else lowered_backward, \
        lowered_forward


def compiled_spills(kernel) -> int:
    """Most spills of any kernel compiled so far for this JIT function."""
    worst = 0
    for cache in getattr(kernel, "device_caches", {}).values():
        for compiled in cache[0].values():
            compiled._init_handles()
            worst = max(worst, int(getattr(compiled, "n_spills", 0) or 0))
    return worst


def measure(keys: Dict[str, Tuple[str, dict, str]], reps: int, rounds: int, budget_s: float) -> Dict[str, dict]:
    table: Dict[str, dict] = {}
    deadline = time.time() + budget_s
    calls: Dict[str, tuple] = {}
    for key, (kernel, heuristic, name) in sorted(keys.items()):
        if time.time() > deadline:
            print(f"out of time: {key} keeps the heuristic", flush=True)
            table[key] = heuristic
            continue
        if name not in calls:
            calls[name] = cuda_call(name)
        conv_fwd, lowered_bwd, lowered_fwd = calls[name]
        fn = conv_fwd if kernel == "conv" else (lowered_fwd if kernel == "fwd" else lowered_bwd)
        dtype = torch.bfloat16
        channels = int(key.split("|")[2])
        cins = [int(c) for c in key.split("|conv")[1].split(",")] if "|conv" in key else None
        best, best_us = heuristic, None
        for cand in tuning.candidates(kernel, dtype, channels, True, cins):
            with tuning.forced(kernel, cand):
                try:
                    us = timing.cuda_graph_replay_us(fn, reps, rounds)
                except Exception as e:  # noqa: BLE001 - a candidate that does not compile or launch is skipped
                    print(f"  {key} {cand}: {type(e).__name__}", flush=True)
                    continue
            if compiled_spills(KERNEL_OF[kernel]):
                print(f"  {key} {cand}: spills, skipped", flush=True)
                KERNEL_OF[kernel].device_caches.clear()
                continue
            if best_us is None or us < best_us:
                best, best_us = cand, us
        table[key] = best
        print(f"{key}: {best} {best_us if best_us is None else round(best_us, 2)} us", flush=True)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-from-heuristic", action="store_true",
                   help="no GPU: write the heuristic's choice for every table key, marked as not measured")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write it")
    p.add_argument("--reps", type=int, default=20, help="calls per CUDA graph")
    p.add_argument("--rounds", type=int, default=5, help="graph replays per candidate (median)")
    p.add_argument("--time-budget", type=float, default=3600.0, help="seconds; keys left keep the heuristic")
    args = p.parse_args(argv)
    keys = table_keys()
    if args.seed_from_heuristic:
        table = {k: h for k, (_, h, _) in keys.items()}
        source = ("heuristic seed, not measured: tuning.py's choice for each HRNet key; regenerate on a GPU with "
                  "benchmarks/tune_triton.py")
    else:
        if not torch.cuda.is_available():
            print("tune_triton: no CUDA device (use --seed-from-heuristic to write the heuristic's choices)",
                  file=sys.stderr)
            return 2
        import triton

        table = measure(keys, args.reps, args.rounds, args.time_budget)
        source = (f"measured {datetime.date.today().isoformat()} on {torch.cuda.get_device_name()}, torch "
                  f"{torch.__version__}, triton {triton.__version__} (benchmarks/tune_triton.py, CUDA-graph replay)")
    if args.dry_run:
        pprint.pprint(table, width=116)
    else:
        write_table(table, source)
        print(f"tune_triton: wrote {len(table)} entries to {TABLE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
