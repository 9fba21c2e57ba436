"""Loads the compiled extension hrnet_fast._C and reports what it holds."""
from __future__ import annotations

import importlib
from typing import Any, Dict, Optional

_C: Optional[Any]
_IMPORT_ERROR: Optional[BaseException]
try:
    _C = importlib.import_module("hrnet_fast._C")  # registers the hrnet_fast:: ops
    _IMPORT_ERROR = None
except ImportError as exc:  # not built (pure-Python checkout) or built for another torch
    _C = None
    _IMPORT_ERROR = exc


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
