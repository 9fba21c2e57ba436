"""What one benchmark run measures (`Case`) and the parsing of its options."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import torch

from ..models import HEADS  # noqa: F401  re-exported: the heads an architecture takes
from ..models.configs import ARCHS

#: Own architectures (hrnet_fast.models.create); they need a head.
OWN_ARCHS: Tuple[str, ...] = tuple(ARCHS)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BASE_VARIANTS: Tuple[str, ...] = ("eager", "fused", "compile", "fused+compile", "optimized")
BACKEND_CHOICES: Tuple[str, ...] = ("auto", "cpu", "cuda", "triton", "reference")
COMPILE_MODES: Tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_BACKEND = r"(?:\[(?:auto|cpu|cuda|triton|reference)\])?"
_MODE = r"(?:\[(?:" + "|".join(COMPILE_MODES) + r")\])?"
_VARIANT_RE = re.compile(rf"^(eager|compile{_MODE}|fused{_BACKEND}|fused{_BACKEND}\+compile{_MODE}|optimized{_BACKEND})$")


@dataclass(frozen=True)
class Case:
    """One model, input and device, timed for several variants.

    Attributes:
        model: a timm HRNet name (``hrnet_w18_small`` ... ``hrnet_w64``) or an
            own architecture (``w18_small_v1`` ... ``w64``, needs ``head``).
        head: "seg" or "pose" for own architectures, else None.
        size: input (H, W).
        batch: images per call.
        device: "cpu" or "cuda".
        dtype: "float32", "float16" or "bfloat16".
        channels_last: model and input in channels_last memory format.
        train: time a training step (forward, loss, backward, SGD step).
        variants: variant names, e.g. ["eager", "fused[triton]", "compile"].
        backend: backend passed to hrnet_fast.convert for a plain "fused".
        iters: timed rounds (each round calls every variant once).
        warmup: untimed rounds before the timed ones (the first is the one
            that compiles).
        time_budget_s: if set, fewer timed rounds (at least 3) when `iters`
            would not fit in this many seconds from the case's start (first
            calls, torch.compile's included, and warm-up count, but are
            never cut short: they can overrun it).
        seed: seed for weights, BatchNorm statistics and the input.
    """

    model: str
    head: Optional[str]
    size: Tuple[int, int]
    batch: int
    device: str
    dtype: str = "float32"
    channels_last: bool = False
    train: bool = False
    variants: List[str] = field(default_factory=lambda: ["eager", "fused"])
    backend: str = "auto"
    iters: int = 20
    warmup: int = 3
    time_budget_s: Optional[float] = None
    seed: int = 0

    @property
    def label(self) -> str:
        """Short human-readable name of the case."""
        name = self.model if self.head is None else f"{self.model}-{self.head}"
        mode = "train" if self.train else "eval"
        fmt = ", channels_last" if self.channels_last else ""
        return f"{name} {self.batch}x3x{self.size[0]}x{self.size[1]} {self.dtype}{fmt} {mode} on {self.device}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def parse_size(text: str) -> Tuple[int, int]:
    """Parse "HxW" (e.g. "256x192") into (H, W).

    Raises:
        ValueError: naming the expected format when `text` is not two
            positive integers joined by "x".
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"invalid size {text!r}: expected HxW with two positive integers, e.g. 256x192")
    return int(m.group(1)), int(m.group(2))


def parse_variants(text: str) -> List[str]:
    """Parse a comma-separated variant list ("eager,fused,compile";
    "fused[triton]" names a backend), keeping order and dropping repeats."""
    out: List[str] = []
    for item in (v.strip() for v in str(text).split(",")):
        if not item:
            continue
        if not _VARIANT_RE.match(item):
            raise ValueError(f"unknown variant {item!r}: expected eager, fused[BACKEND], compile[MODE], "
                             f"fused[BACKEND]+compile[MODE] or optimized[BACKEND] ([...] optional; BACKEND one of "
                             f"{', '.join(BACKEND_CHOICES)}; MODE one of {', '.join(COMPILE_MODES)})")
        if item not in out:
            out.append(item)
    if not out:
        raise ValueError("no variants given: expected e.g. eager,fused,compile")
    return out


def expand_variants(variants: Sequence[str], backend: str, device: str,
                    available: Optional[dict] = None) -> List[str]:
    """Name every fused variant after the backend it will run on.

    A plain "fused" becomes "fused[<backend>]". With backend "auto" on CUDA
    it becomes one fused variant per available GPU backend (triton, cuda),
    so one run compares them; on the CPU "auto" stays "fused" (convert
    picks the CPU kernel). "optimized" and "fused+compile" take the
    backend the same way when one is named. "eager" always comes first:
    the others are compared against it.
    """
    if available is None:
        import hrnet_fast

        available = hrnet_fast.backends()
    out: List[str] = ["eager"]
    for v in variants:
        if v == "fused":
            if backend != "auto":
                names = [f"fused[{backend}]"]
            elif device == "cuda":
                names = [f"fused[{b}]" for b in ("triton", "cuda") if available.get(b)] or ["fused"]
            else:
                names = ["fused"]
        elif v in ("optimized", "fused+compile") and backend != "auto":
            names = [v.replace(v.split("+")[0], f"{v.split('+')[0]}[{backend}]", 1)]
        else:
            names = [v]
        out.extend(n for n in names if n not in out)
    return out


def fused_backend(variant: str, default: str = "auto") -> str:
    """The backend a fused or optimized variant asks for ("fused[triton]" ->
    "triton")."""
    m = re.match(r"(?:fused|optimized)\[(\w+)\]", variant)
    return m.group(1) if m else default


def compile_mode(variant: str) -> Optional[str]:
    """The torch.compile mode a variant asks for: None when it does not
    compile, "default" unless named ("compile[max-autotune]")."""
    m = re.search(r"compile(?:\[([\w-]+)\])?$", variant)
    if m is None:
        return None
    return m.group(1) or "default"


def is_user_model(model: str) -> bool:
    """A `package.module:factory` model: a zero-argument callable that
    returns the nn.Module to time."""
    return ":" in model


#: On CPU: eager, converted, optimized and compiled side by side, about three
#: minutes on 2 cores, a minute and a half of it torch.compile's first call;
#: on a slower or busy machine the 180 s budget trims the timed rounds
#: (never below 3). It cannot cut a first call short: a compile that takes
#: longer (319 s seen on a loaded 2-core machine) makes the run longer.
CPU_DEFAULT = Case(model="hrnet_w18_small", head=None, size=(256, 192), batch=4, device="cpu",
                   variants=["eager", "fused", "optimized", "compile"], iters=100, warmup=3, time_budget_s=180.0)
#: On CUDA: the two cases people run HRNet for.
CUDA_DEFAULTS = (
    Case(model="w48", head="seg", size=(1024, 2048), batch=1, device="cuda",
         variants=["eager", "fused", "optimized", "compile"], iters=30, warmup=3),
    Case(model="w32", head="pose", size=(256, 192), batch=32, device="cuda",
         variants=["eager", "fused", "optimized", "compile"], iters=30, warmup=3),
)


def default_cases(device: str) -> List[Case]:
    """The cases `hrnet-fast bench` runs when no model is named."""
    return list(CUDA_DEFAULTS) if device == "cuda" else [CPU_DEFAULT]


def with_overrides(case: Case, **kw) -> Case:
    """`case` with the options that are not None replaced."""
    return replace(case, **{k: v for k, v in kw.items() if v is not None})
