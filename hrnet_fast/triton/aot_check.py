"""Compile every Triton kernel variant for a GPU target without a GPU.

The interpreter runs kernels as NumPy and so accepts programs the compiler
rejects (return-type mismatches, methods on specialized constexprs, tl.dot
shape rules). Compiling ahead of time for sm_90 (triton.compile with an
explicit GPUTarget needs no device) catches those on CPU-only machines.

    python -m hrnet_fast.triton.aot_check     # prints failures, exits 1 on any
"""
from __future__ import annotations

import sys
from typing import Dict, Iterable, List, Tuple

import triton

from . import backward, config, conv_kernel, forward

TARGET = ("cuda", 90, 32)


def _jit_fn(kernel):
    """The JITFunction under an Autotuner (or the kernel itself)."""
    while not isinstance(kernel, triton.JITFunction):
        kernel = kernel.fn
    return kernel


def _compile(kernel, pointers: Dict[str, str], constexprs: Dict[str, object], ones: Iterable[str] = (),
             num_warps: int = 4, num_stages: int = 3) -> None:
    """Compile with every pointer typed as given, float scales as fp32, other
    ints as i32, and the names in `ones` specialized to 1 as Triton does."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit_fn(kernel)
    signature, consts = {}, dict(constexprs)
    for i, name in enumerate(fn.arg_names):
        if fn.params[i].is_constexpr or name in ones:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        elif name.endswith(("nsh", "nsw", "bsh", "bsw")):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    for name in ones:
        consts[name] = 1
    src = ASTSource(fn=fn, signature=signature, constexprs=consts)
    triton.compile(src, target=GPUTarget(*TARGET), options={"num_warps": num_warps, "num_stages": num_stages})


def _forward_cases() -> List[Tuple[str, dict]]:
    cases = []
    variants = [  # (dtype, F64, I64, kinds, sizes specialized to 1, chaining)
        ("bf16", False, False, (0, 1, 2, 2), (), (False, False)),
        ("fp16", False, True, (0, 2, 2, -1), (), (True, True)),
        ("fp32", False, False, (1, 2, -1, -1), ("x1_h", "x1_w", "W"), (True, False)),
        ("fp64", True, True, (2, 2, 1, 2), ("x0_h", "x0_w", "H"), (False, True)),
    ]
    for dt, f64, i64, kinds, ones, (has_acc, store_acc) in variants:
        for align in (False, True):
            pointers = {"y_ptr": "*" + dt, "acc_in_ptr": "*fp64" if f64 else "*fp32", "acc_out_ptr": "*fp64" if f64 else "*fp32", "sc_ptr": "*fp32",
                        "sh_ptr": "*fp32", **{f"x{j}_ptr": "*" + dt for j in range(4)}}
            consts = dict(KIND0=kinds[0], KIND1=kinds[1], KIND2=kinds[2], KIND3=kinds[3], FLAT0=True,
                          FLAT1=False, FLAT2=False, FLAT3=False, FLAT_Y=True, ALIGN=align, F64=f64, I64=i64,
                          RELU=True, HAS_ACC=has_acc, STORE_ACC=store_acc, BLOCK_P=64, BLOCK_C=32)
            cases.append((f"forward {dt} kinds={kinds} align={align} ones={ones}",
                          dict(kernel=forward.exchange_fwd_kernel, pointers=pointers, constexprs=consts, ones=ones)))
    return cases


def _backward_cases() -> List[Tuple[str, dict]]:
    cases = []
    variants = [
        ("bf16", False, False, 0, ()), ("bf16", False, True, 2, ()), ("fp32", False, False, 1, ("h", "H")),
        ("fp64", True, False, 2, ("h", "H")), ("fp64", True, True, 1, ("w",)),
        ("fp16", False, False, 2, ("w", "iter_w")),
    ]
    for dt, f64, i64, kind, ones in variants:
        for align in (False, True):
            acc = "*fp64" if f64 else "*fp32"
            pointers = {"grad_ptr": "*" + dt, "out_ptr": "*" + dt, "x_ptr": "*" + dt, "gx_ptr": "*" + dt,
                        "sc_ptr": acc, "psum_g_ptr": acc, "psum_gx_ptr": acc}
            consts = dict(KIND=kind, ALIGN=align, F64=f64, I64=i64, RELU=True, FLAT_G=True, FLAT_O=False,
                          FLAT_X=True, FLAT_D=False, BLOCK_P=64, BLOCK_C=32)
            cases.append((f"backward {dt} kind={kind} align={align} ones={ones}",
                          dict(kernel=backward.exchange_bwd_kernel, pointers=pointers, constexprs=consts,
                               ones=ones)))
    return cases


def _conv_cases() -> List[Tuple[str, dict]]:
    cases = []
    for dt, nconv, i64, ones in [("bf16", 3, False, ()), ("fp32", 1, True, ("a0_c",)), ("fp16", 2, False, ())]:
        pointers = {"y_ptr": "*" + dt, "sc_ptr": "*fp32", "sh_ptr": "*fp32", "bias_ptr": "*fp32",
                    **{f"x{j}_ptr": "*" + dt for j in range(4)}, **{f"a{j}_ptr": "*" + dt for j in range(3)},
                    **{f"w{j}_ptr": "*" + dt for j in range(3)}}
        consts = dict(KIND0=0, KIND1=2, KIND2=1, KIND3=-1, FLAT0=True, FLAT1=False, FLAT2=False, FLAT3=False,
                      FLAT_Y=True, NCONV=nconv, ALIGN=False, I64=i64, RELU=True, BLOCK_P=64, BLOCK_C=32,
                      BLOCK_K=32)
        cases.append((f"conv {dt} nconv={nconv} i64={i64}",
                      dict(kernel=conv_kernel.exchange_conv_fwd_kernel, pointers=pointers, constexprs=consts,
                           ones=ones)))
    return cases


def _config_cases() -> List[Tuple[str, dict]]:
    """Every autotune config once (bf16), for block-shape rules such as
    tl.dot's minimum tile sizes."""
    cases = []
    base = {name: case for name, case in [_forward_cases()[0], _backward_cases()[0], _conv_cases()[0]]}
    for (name, case), configs in zip(base.items(), [config.FORWARD_CONFIGS, config.BACKWARD_CONFIGS,
                                                     conv_kernel.CONV_CONFIGS]):
        for cfg in configs:
            c = dict(case)
            c["constexprs"] = {**case["constexprs"], **cfg.kwargs}
            c["num_warps"] = cfg.num_warps
            c["num_stages"] = cfg.num_stages
            cases.append((f"{name.split()[0]} config {cfg.kwargs} warps={cfg.num_warps}", c))
    return cases


def all_cases() -> List[Tuple[str, dict]]:
    return _forward_cases() + _backward_cases() + _conv_cases() + _config_cases()


def check(cases=None) -> List[str]:
    """Compile each case; returns 'name: error' for each failure."""
    failures = []
    for name, case in (cases if cases is not None else all_cases()):
        try:
            _compile(**case)
        except Exception as e:  # noqa: BLE001 - report every compiler error, keep going
            failures.append(f"{name}: {str(e)[-800:]}")
    return failures


if __name__ == "__main__":
    if config.INTERPRET:
        sys.exit("aot_check compiles real kernels: run it without TRITON_INTERPRET=1")
    failed = check()
    for f in failed:
        print(f, file=sys.stderr)
    # Kernels compiled for sm_90, as the plain "N passed, N failed" closing line.
    print(f"aot_check: {len(all_cases()) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
