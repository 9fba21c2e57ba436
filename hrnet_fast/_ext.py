"""Loads the compiled extension hrnet_fast._C and reports what it holds.

When it cannot load (a checkout never built, or a binary built for another
torch) every op still runs, as the plain-PyTorch reference: slowly. That is
said once, at import, with the reason, so that it is never silent.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Dict, Optional

_C: Optional[Any]
_IMPORT_ERROR: Optional[BaseException]
try:
    _C = importlib.import_module("hrnet_fast._C")  # registers the hrnet_fast:: ops
    _IMPORT_ERROR = None
except ImportError as exc:  # not built (pure-Python checkout) or built for another torch
    _C = None
    _IMPORT_ERROR = exc


def _built_for() -> Optional[str]:
    """The torch requirement of the installed distribution ("torch==2.14.1":
    the torch its binary was built against), or None."""
    try:
        from importlib.metadata import PackageNotFoundError, requires
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        reqs = requires("hrnet_fast") or []
    except PackageNotFoundError:
        return None
    pins = [r.split(";")[0].replace(" ", "") for r in reqs if r.replace(" ", "").startswith("torch==")]
    return pins[0] if pins else None


def not_loaded_message(error: BaseException) -> str:
    """Why the extension is not used, and what to do about it."""
    import torch

    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    pin = _built_for()
    running = torch.__version__.split("+")[0]
    if pin is not None and pin != f"torch=={running}":
        fix = (f"this install was built against {pin} and torch {torch.__version__} is running: install "
               f"{pin}, or rebuild against this torch with `pip install --no-build-isolation .`")
    else:
        fix = "build it against the installed torch with `pip install --no-build-isolation .` (or -e .)"
    return (f"hrnet_fast: the compiled extension hrnet_fast._C did not load ({text}); every op runs the "
            f"plain-PyTorch reference instead of the fused kernels. To fix: {fix}")


if _IMPORT_ERROR is not None:
    warnings.warn(not_loaded_message(_IMPORT_ERROR), RuntimeWarning)


def extension():
    """The loaded hrnet_fast._C module, or None when it could not be imported."""
    return _C


def import_error() -> Optional[BaseException]:
    """Why hrnet_fast._C did not load (None when it did)."""
    return _IMPORT_ERROR


def build_info() -> Dict[str, Any]:
    """How the extension was built.

    Example:
        >>> import hrnet_fast
        >>> sorted(hrnet_fast.build_info())[:3]
        ['cuda_arch_list', 'cuda_compiled', 'extension_loaded']
    """
    import torch

    if _C is None:
        return {"extension_loaded": False, "cuda_compiled": False, "cuda_arch_list": [],
                "torch": None, "torch_runtime": torch.__version__, "error": repr(_IMPORT_ERROR)}
    archs = [a for a in _C.cuda_arch_list.split(";") if a]
    return {"extension_loaded": True, "cuda_compiled": bool(_C.cuda_compiled), "cuda_arch_list": archs,
            "torch": _C.torch_version, "torch_runtime": torch.__version__}
