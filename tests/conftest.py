import os

import pytest
import torch

# Triton-interpreter tests need TRITON_INTERPRET=1 before triton is imported,
# so `make test-interp` runs them in a process of their own.
if os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore = ["interpreter"]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by make gpu-check)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
