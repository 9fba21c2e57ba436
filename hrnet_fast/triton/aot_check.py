"""Compile every Triton kernel variant for sm_90 without a GPU, and fail on
register spills.

The variants are not listed by hand: the launchers themselves run on meta
tensors for a set of calls (calls()) with wrap_triton replaced by a
recorder, and every distinct launch they would make is specialized exactly
as Triton's JIT would (triton's own native_specialize_impl: pointer and
integer divisibility by 16, integers equal to 1 and None as constants),
then compiled with an explicit GPUTarget (no device needed). The calls
cover every code path (slot kinds, layouts, dtypes, chained launches,
int64 offsets, one to three conv terms) and every entry of the shipped
tuning table (each table key must be hit, so each shipped configuration is
compiled).

The interpreter runs kernels as NumPy and so accepts programs the compiler
rejects; this catches those. Registers, shared memory and local memory
(spills) come from the cubin (the bundled cuobjdump); Triton reports
n_spills as local bytes / 4, so any local memory fails the check.

    python -m hrnet_fast.triton.aot_check            # table, exit 1 on any failure
    python -m hrnet_fast.triton.aot_check --jobs 2   # compile in parallel
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import backward, conv_kernel, forward, slots, tuning

TARGET = ("cuda", 90, 32)
MODULES = {"forward": forward, "backward": backward, "conv_kernel": conv_kernel}
KERNELS = {
    "exchange_fwd_kernel": "forward", "exchange_bwd_rows_kernel": "backward",
    "exchange_bwd_cols_kernel": "backward", "exchange_bwd_reduce_kernel": "backward",
    "exchange_conv_kernel": "conv_kernel",
}


# ---- the calls --------------------------------------------------------------

META = torch.device("meta")
HRNET = {"w18": (18, 36, 72, 144), "w32": (32, 64, 128, 256), "w48": (48, 96, 192, 384)}


def _t(n, c, h, w, dtype, cl):
    t = torch.empty((n, c, h, w), dtype=dtype, device=META)
    return t.contiguous(memory_format=torch.channels_last) if cl else t


def _affine(c, given=True):
    return torch.empty((c,), dtype=torch.float32, device=META) if given else None


def _backward(out, inputs, scales, mode, align, relu):
    """The backward as autograd calls it: out with a ReLU, the inputs that
    have a scale, every input's shape and layout."""
    kept = [x if s is not None else None for x, s in zip(inputs, scales)]
    backward.launch_backward(torch.empty_like(out), out if relu else None, kept, [x.shape for x in inputs],
                             [slots.is_cl(x) for x in inputs], scales, mode, align, relu)


def _exchange(inputs, scales, shifts, mode, align=False, relu=True, backward_too=True):
    out = torch.empty((inputs[0].shape[0], inputs[0].shape[1], inputs[0].shape[2], inputs[0].shape[3]),
                      dtype=inputs[0].dtype, device=META,
                      memory_format=torch.channels_last if slots.is_cl(inputs[0]) else torch.contiguous_format)
    forward.launch_forward(out, inputs, scales, shifts, mode, align, relu)
    if backward_too:
        _backward(out, inputs, scales, mode, align, relu)


def _exchange_sized(inputs, scales, shifts, size, mode, align=False):
    x0 = inputs[0]
    out = torch.empty((x0.shape[0], x0.shape[1], *size), dtype=x0.dtype, device=META)
    forward.launch_forward(out, inputs, scales, shifts, mode, align, True)
    _backward(out, inputs, scales, mode, align, True)


def _conv(inputs, scales, shifts, terms, mode, align=False, relu=True):
    x0 = inputs[0]
    out = torch.empty(x0.shape, dtype=x0.dtype, device=META,
                      memory_format=torch.channels_last if slots.is_cl(x0) else torch.contiguous_format)
    weights = [conv_kernel.kmajor_weight(w, x0.dtype) for _, w, _ in terms]
    conv_kernel.launch_conv_forward(out, inputs, scales, shifts, [a for a, _, _ in terms], weights,
                                    [b for _, _, b in terms], mode, align, relu)


def hrnet_row(arch: str, row: int, batch: int, size: Tuple[int, int], dtype, cl: bool, mode: str,
              convs: bool) -> Tuple[list, list, list, list]:
    """Output branch `row` of a converted stage-4 exchange: x_row without an
    affine, coarser branches' 1x1-conv outputs with their BN affine, finer
    branches' chains as conv terms (convs) or as same-size inputs whose
    shift is the conv bias (lowered)."""
    ch = HRNET[arch]
    h, w = size[0] >> row, size[1] >> row
    inputs, scales, shifts, terms = [_t(batch, ch[row], h, w, dtype, cl)], [None], [None], []
    for j in range(row + 1, 4):
        inputs.append(_t(batch, ch[row], h >> (j - row), w >> (j - row), dtype, cl))
        scales.append(_affine(ch[row]))
        shifts.append(_affine(ch[row]))
    for j in range(row):
        if convs:
            a = _t(batch, ch[j], 2 * h, 2 * w, dtype, cl)
            wt = torch.empty((ch[row], ch[j], 3, 3), dtype=dtype, device=META)
            terms.append((a, wt, _affine(ch[row])))
        else:
            inputs.append(_t(batch, ch[row], h, w, dtype, cl))
            scales.append(None)
            shifts.append(_affine(ch[row]))
    return inputs, scales, shifts, terms


# The shapes the shipped table covers: HRNet seg stage 4 at a 512x1024 input
# (stage-4 branch 0 at 128x256), batch 8, bf16, channels_last.
TABLE_CASE = dict(batch=8, size=(128, 256), dtype=torch.bfloat16, cl=True)


def table_calls() -> List[Tuple[str, Callable[[], None]]]:
    # Bilinear only: the table keys do not name the mode, and a bilinear
    # gather holds more registers than a nearest one with the same tiles.
    calls = []
    for arch in HRNET:
        for row in range(4):
            def call(arch=arch, row=row):
                inputs, scales, shifts, terms = hrnet_row(arch, row, convs=True, mode="bilinear", **TABLE_CASE)
                if terms:
                    _conv(inputs, scales, shifts, terms, "bilinear")
                if arch == "w48":
                    lowered = hrnet_row(arch, row, convs=False, mode="bilinear", **TABLE_CASE)
                    _exchange(*lowered[:3], "bilinear")
            calls.append((f"{arch} row {row}", call))
    return calls


def path_calls() -> List[Tuple[str, Callable[[], None]]]:
    """Every code path once: kinds, layouts, dtypes, align_corners, absent
    affines, a 1x1 source, downsizing, chained launches, int64, conv terms."""
    calls = []
    odd = [(15, 9), (8, 5), (3, 2), (1, 1)]
    # Each dtype in both layouts and both modes (not every combination).
    for dtype, cl, mode, align in ((torch.float32, False, "nearest", False), (torch.float32, True, "bilinear", True),
                                   (torch.float16, True, "nearest", False), (torch.float16, False, "bilinear", False),
                                   (torch.float64, False, "bilinear", True), (torch.float64, True, "nearest", False)):
        def call(dtype=dtype, cl=cl, mode=mode, align=align):
            xs = [_t(2, 18, h, w, dtype, cl) for h, w in odd]
            _exchange(xs, [_affine(18), None, _affine(18), _affine(18)],
                      [None, _affine(18), _affine(18), None], mode, align)
        calls.append((f"odd {dtype} cl={cl} {mode} align={align}", call))

    def no_relu_no_affine():
        xs = [_t(1, 5, 6, 4, torch.float32, False), _t(1, 5, 3, 2, torch.float32, False)]
        _exchange(xs, [None, None], [None, None], "bilinear", relu=False)
    calls.append(("no relu, no affine", no_relu_no_affine))

    def downsizing():
        xs = [_t(1, 8, 13, 13, torch.bfloat16, True), _t(1, 8, 26, 26, torch.bfloat16, True)]
        _exchange_sized(xs, [None, _affine(8)], [None, None], (13, 13), "bilinear")
    calls.append(("bilinear downsizing", downsizing))

    def chained():
        xs = [_t(1, 3, 6, 6, torch.float32, False)] + [_t(1, 3, 3, 3, torch.float32, False)] * 8
        _exchange(xs, [_affine(3)] * 9, [None] * 9, "nearest")
    calls.append(("nine inputs, chained", chained))

    def int64():
        xs = [_t(1, 2, 32768, 32769, torch.float16, False), _t(1, 2, 1, 1, torch.float16, False)]
        _exchange(xs, [_affine(2), _affine(2)], [_affine(2), None], "bilinear")
    calls.append(("int64 offsets", int64))

    # One, two and three conv terms; each dtype and layout once.
    for m, dtype, cl in ((1, torch.float32, False), (2, torch.float16, True), (3, torch.float32, True),
                         (3, torch.float16, False)):
        def conv_call(m=m, dtype=dtype, cl=cl):
            xs = [_t(2, 18, 8, 6, dtype, cl), _t(2, 18, 4, 3, dtype, cl)]
            terms = [(_t(2, c, h, w, dtype, cl), torch.empty((18, c, 3, 3), dtype=dtype, device=META), b)
                     for c, h, w, b in ((5, 16, 12, _affine(18)), (20, 15, 11, None), (7, 16, 11, None))]
            _conv(xs, [_affine(18), None], [None, _affine(18)], terms[:m], "bilinear", True)
        calls.append((f"conv {m} terms {dtype} cl={cl}", conv_call))
    return calls


def calls() -> List[Tuple[str, Callable[[], None]]]:
    return path_calls() + table_calls()


# ---- recording ---------------------------------------------------------------

class Launch(tuple):
    """(kernel name, signature, constexprs, attrs, options): hashable."""


@contextmanager
def _recording(launches: List[tuple], hit_keys: set):
    def wrap(kernel):
        class Grid:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    launches.append(_specialize(kernel, args, kwargs))
                return launch
        return Grid()

    saved = {name: mod.wrap_triton for name, mod in MODULES.items()}
    real_choose = tuning._choose

    def choose(kernel, table_key, heuristic, interpret=None):
        if table_key in tuning.TABLE:
            hit_keys.add(table_key)
        return real_choose(kernel, table_key, heuristic, None)

    for mod in MODULES.values():
        mod.wrap_triton = wrap
    tuning._choose = choose
    try:
        yield
    finally:
        for name, mod in MODULES.items():
            mod.wrap_triton = saved[name]
        tuning._choose = real_choose


class _Ptr:
    """What the JIT's specialization sees of a tensor: its dtype and its
    address's alignment (a caching-allocator block is 512-byte aligned; a
    view adds its offset)."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._ptr = 512 + t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._ptr


def _specialize(kernel, args, kwargs) -> tuple:
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.nvidia.compiler import CUDABackend

    bound = dict(zip(kernel.arg_names, args))
    bound.update({k: v for k, v in kwargs.items() if k in kernel.arg_names})
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(kernel.params):
        v = bound[p.name]
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[(i,)] = v
            continue
        ty, key = native_specialize_impl(CUDABackend, _Ptr(v) if isinstance(v, torch.Tensor) else v, p.is_const,
                                         not p.do_not_specialize, not p.do_not_specialize_on_alignment)
        signature[p.name] = ty
        if ty == "constexpr":
            constexprs[(i,)] = v
        elif isinstance(key, str):
            attrs[(i,)] = CUDABackend.parse_attr(key)
    options = (("num_warps", kwargs.get("num_warps", 4)), ("num_stages", kwargs.get("num_stages", 3)))
    freeze = lambda d: tuple(sorted((k, repr(v) if isinstance(v, list) else v) for k, v in d.items()))
    return Launch((kernel.fn.__name__, tuple(signature.items()), freeze(constexprs), freeze(attrs), options))


def record(which: Optional[List[Tuple[str, Callable[[], None]]]] = None) -> Tuple[List[tuple], set]:
    """Distinct launches of the given calls, and the table keys they hit."""
    launches, hit = [], set()
    with _recording(launches, hit):
        for _, call in (which if which is not None else calls()):
            call()
    return list(dict.fromkeys(launches)), hit


# ---- compiling ---------------------------------------------------------------

def _cuobjdump() -> Optional[str]:
    import triton.backends.nvidia as nv

    bundled = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    return bundled if os.path.exists(bundled) else shutil.which("cuobjdump")


def resources(cubin: bytes) -> Dict[str, int]:
    """REG, SHARED, LOCAL, STACK of the kernel in a cubin."""
    tool = _cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found: cannot read register and spill counts")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    found = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", text))
    return {k: int(v) for k, v in found.items()}


def compile_launch(launch: tuple) -> Dict[str, object]:
    """Compile one recorded launch; returns its resources and whether its
    PTX has 16-byte global loads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    name, signature, constexprs, attrs, options = launch
    kernel = getattr(MODULES[KERNELS[name]], name)
    consts = {k: v for k, v in constexprs}
    attr = {k: eval(v) if isinstance(v, str) else v for k, v in attrs}  # noqa: S307 - our own repr of lists
    src = ASTSource(fn=kernel, signature=dict(signature), constexprs=consts, attrs=attr)
    compiled = triton.compile(src, target=GPUTarget(*TARGET), options=dict(options))
    res = resources(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    res["vec16"] = bool(re.search(r"ld\.global(\.\w+)*\.v4\.(b32|u32|f32)|ld\.global(\.\w+)*\.v2\.(b64|u64)|"
                                  r"cp\.async\.cg\.shared\.global(\.\w+)* \[[^]]+\], \[[^]]+\], 16", ptx))
    return res


def describe(launch: tuple) -> str:
    name, signature, constexprs, _attrs, options = launch
    params = getattr(MODULES[KERNELS[name]], name).arg_names
    consts = {params[k[0]]: v for k, v in constexprs if params[k[0]].isupper()}
    ptrs = sorted({t for _, t in signature if t.startswith("*")})
    return f"{name} {'/'.join(ptrs)} {consts} {dict(options)}"


def _one(launch):
    try:
        return launch, compile_launch(launch), None
    except Exception as e:  # noqa: BLE001 - report every compiler error, keep going
        return launch, None, f"{type(e).__name__}: {str(e)[-1500:]}"


def check(launches: List[tuple], jobs: int = 1, verbose: bool = False) -> List[str]:
    """Compile each launch; returns one failure line per error or spill."""
    failures = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_one, launches))
    else:
        results = [_one(launch) for launch in launches]
    for launch, res, err in results:
        if err is not None:
            failures.append(f"{describe(launch)}: {err}")
            continue
        spills = res.get("LOCAL", 0) // 4
        if verbose:
            print(f"regs {res.get('REG')} shared {res.get('SHARED')} spills {spills} "
                  f"vec16 {res['vec16']}  {describe(launch)}")
        if res.get("LOCAL", 0) or res.get("STACK", 0):
            failures.append(f"{describe(launch)}: spills ({res.get('LOCAL')} bytes local, "
                            f"{res.get('STACK')} stack, {res.get('REG')} registers)")
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("-v", "--verbose", action="store_true", help="print every kernel's registers and spills")
    args = p.parse_args(argv)
    if tuning.INTERPRET:
        sys.exit("aot_check compiles real kernels: run it without TRITON_INTERPRET=1")
    launches, hit = record()
    failures = check(launches, jobs=args.jobs, verbose=args.verbose)
    missed = sorted(set(tuning.TABLE) - hit)
    failures += [f"table entry {k}: no call reaches it (add its shape to aot_check.table_calls)" for k in missed]
    for f in failures:
        print(f, file=sys.stderr)
    # Kernels compiled for sm_90, as the plain "N passed, N failed" closing line.
    print(f"aot_check: {len(launches) + len(tuning.TABLE) - len(failures)} passed, {len(failures)} failed "
          f"({len(launches)} kernels, {len(tuning.TABLE)} table entries)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
