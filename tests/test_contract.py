"""The op contract (issue 13): one set of rules, the same error whichever
backend was asked for, a call that enters its op once, backends described
as data, and a package whose imports only point down."""
import ast
import os
import re

import pytest
import torch

import hrnet_fast
from hrnet_fast import backend as backend_registry
from hrnet_fast.contract import make_call
from exchange_cases import BAD_CALLS
from fake_cuda import OpCounter, fake_cuda  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _x(*shape, **kw):
    return torch.randn(*shape, **kw)


# Bad calls get one error whichever backend (test_exchange.py runs every
# case on every backend name).
@pytest.mark.parametrize("make,exc,match", [c for c in BAD_CALLS if c[2] is not None])
def test_a_failing_call_reaches_the_op_at_most_once(make, exc, match):
    args, kwargs = make()
    with OpCounter() as counter, pytest.raises(exc, match=match):
        hrnet_fast.exchange(*args, **kwargs)
    custom = [op for op in counter.ops if op.startswith("hrnet_fast.")]
    assert len(custom) <= 1, custom


# Ids other than the bare word "cuda": conftest skips that keyword without a GPU.
@pytest.mark.parametrize("fake_cuda,op", [("cuda", "hrnet_fast.exchange.default"),
                                          ("triton", "hrnet_fast.exchange_triton.default")],
                         indirect=["fake_cuda"], ids=["cuda-backend", "triton-backend"])
def test_one_call_dispatches_one_op_and_no_aten_op_on_fake_cuda(fake_cuda, op):
    backend = fake_cuda
    xs = [torch.randn(2, 8, 16, 16, device="cuda"), torch.randn(2, 8, 8, 8, device="cuda"),
          torch.randn(2, 8, 4, 4, device="cuda")]
    scales = [None, torch.rand(8, device="cuda"), torch.rand(8, device="cuda")]
    shifts = [torch.rand(8, device="cuda"), None, torch.rand(8, device="cuda")]
    with OpCounter() as counter:
        y = hrnet_fast.exchange(xs, scales, shifts, backend=backend)
    assert counter.ops == [op]
    assert y.device.type == "cuda" and tuple(y.shape) == (2, 8, 16, 16)
    xs = [x.to(torch.bfloat16, memory_format=torch.channels_last) for x in xs]
    with OpCounter() as counter:  # bf16 channels_last, no affine: the same
        y = hrnet_fast.exchange(xs, mode="bilinear", backend=backend)
    assert counter.ops == [op]
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("fake_cuda", ["cuda"], indirect=True, ids=["cuda-backend"])
def test_cpu_cuda_mix_is_a_value_error_on_fake_cuda(fake_cuda):
    x0 = torch.randn(2, 8, 16, 16, device="cuda")
    with OpCounter() as counter, pytest.raises(ValueError, match="is on cpu but inputs"):
        hrnet_fast.exchange([x0, torch.randn(2, 8, 8, 8, device="cpu")])
    assert [op for op in counter.ops if op.startswith("hrnet_fast.")] == ["hrnet_fast.exchange.default"]
    with pytest.raises(ValueError, match=r"scales\[0\] is on cpu"):
        hrnet_fast.exchange([x0], [torch.ones(8)])


def test_auto_walks_the_priority_list():
    call = make_call([_x(1, 2, 4, 4)])
    assert backend_registry.choose("auto", call).name == "cpu"
    meta = make_call([_x(1, 2, 4, 4, device="meta")])
    assert backend_registry.choose("auto", meta).name == "reference"  # no kernel takes meta tensors
    for name in backend_registry.AUTO_ORDER:
        assert name in backend_registry.BACKENDS


def test_a_named_backend_that_cannot_take_the_call_lists_its_reasons():
    with pytest.raises(ValueError, match="backend 'cpu' cannot take this call: it takes cpu tensors, got meta"):
        hrnet_fast.exchange([_x(1, 2, 4, 4, device="meta")], backend="cpu")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        hrnet_fast.exchange([_x(1, 2, 4, 4)], backend="tpu")


def test_cuda_input_limit_is_declared():
    cuda = backend_registry.BACKENDS["cuda"]
    call = make_call([_x(1, 2, 4, 4)] * 9)
    assert any("at most 8 inputs" in r for r in cuda.not_supported_reasons(call))
    with_convs = make_call([_x(1, 2, 4, 4)] * 7, convs=[(_x(1, 3, 8, 8), _x(2, 3, 3, 3), None)] * 2)
    assert any("at most 8 inputs" in r for r in cuda.not_supported_reasons(with_convs))


def test_triton_declares_its_one_pass_kernel_limits():
    from hrnet_fast.backend import triton as declared

    src = open(os.path.join(ROOT, "hrnet_fast", "triton", "conv_kernel.py")).read()
    assert re.search(rf"^MAX_CONVS = {declared.MAX_KERNEL_CONVS}\b", src, re.M)
    src = open(os.path.join(ROOT, "hrnet_fast", "triton", "forward.py")).read()
    assert re.search(rf"^MAX_SLOTS = {declared.MAX_KERNEL_INPUTS}\b", src, re.M)


def test_readme_backend_table_is_the_declared_one():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name, devices, limits, notes in backend_registry.table():
        row = f"| `{name}` | {devices} | {limits} | {notes} |"
        assert row in readme, f"README lacks the declared row:\n{row}"


def _imports(path, package):
    """Modules of `package` that the module at `path` imports at module
    level (imports inside functions are lazy and do not form cycles at
    import time, but are listed too: layers must point down either way)."""
    tree = ast.parse(open(path).read())
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    parts = rel.split(".")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        here = parts
    else:
        here = parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith(package):
                found.add(mod)
                for alias in node.names:
                    found.add(f"{mod}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package):
                    found.add(alias.name)
    return ".".join(parts), found


def test_no_import_cycles_in_the_package():
    modules = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "hrnet_fast")):
        for f in files:
            if f.endswith(".py"):
                name, deps = _imports(os.path.join(dirpath, f), "hrnet_fast")
                modules[name] = deps
    graph = {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}
    # A package's __init__ re-exporting its children is not a cycle of
    # layers; a child importing its parent package (or a sibling through
    # it) is.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (d.startswith(m + ".") and m + ".__init__" not in d)}
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_backend_imports_the_public_api():
    for dirpath in ("backend", "triton"):
        for f in os.listdir(os.path.join(ROOT, "hrnet_fast", dirpath)):
            if f.endswith(".py"):
                _, deps = _imports(os.path.join(ROOT, "hrnet_fast", dirpath, f), "hrnet_fast")
                assert not {"hrnet_fast.ops", "hrnet_fast.convert", "hrnet_fast.plan", "hrnet_fast.memory"} & deps, (f, deps)
