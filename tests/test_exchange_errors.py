"""Bad arguments raise clear Python exceptions naming the problem."""
import pytest
import torch

import hrnet_fast


def _x(*shape, **kw):
    return torch.randn(*shape, **kw)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("args,kwargs,exc,match", [
    (([],), {}, ValueError, "at least one input"),
    ((_x(1, 2, 4, 4),), {}, TypeError, "list or tuple"),
    (([_x(2, 4, 4)],), {}, ValueError, "4-D"),
    (([_x(1, 2, 4, 4), _x(2, 2, 2, 2)],), {}, ValueError, r"\(N, C\)"),
    (([_x(1, 2, 4, 4), _x(1, 3, 2, 2)],), {}, ValueError, r"\(N, C\)"),
    (([_x(1, 2, 4, 4), _x(1, 2, 2, 2, dtype=torch.float64)],), {}, ValueError, "float64"),
    (([_x(1, 2, 4, 4), _x(1, 2, 8, 8)],), {}, ValueError, "larger than the output size"),
    (([_x(1, 2, 4, 4)],), {"size": (2, 2)}, ValueError, "larger than the output size"),
    (([_x(1, 2, 4, 4)],), {"size": (4,)}, TypeError, "size must be None or"),
    (([_x(1, 2, 4, 4)],), {"size": (4.0, 4)}, TypeError, "size must be None or"),
    (([_x(1, 2, 4, 4)], [torch.ones(2, dtype=torch.int64)]), {}, TypeError, r"scales\[0\] must be floating point"),
    (([_x(1, 2, 4, 4), _x(1, 2, 2, 2, device="meta")],), {}, ValueError, r"is on meta but inputs\[0\] is on cpu"),
    (([_x(1, 2, 4, 4)], [torch.ones(2, device="meta")]), {}, ValueError, r"scales\[0\] is on meta"),
    (([_x(1, 2, 4, 4)],), {"mode": "bicubic"}, ValueError, "mode"),
    (([_x(1, 2, 4, 4)], [torch.ones(3)]), {}, ValueError, r"scales\[0\] must have shape \(2,\)"),
    (([_x(1, 2, 4, 4)], [torch.ones(2), None]), {}, ValueError, "2 entries for 1 inputs"),
    (([_x(1, 2, 4, 4)], None, [torch.ones(2, 1)]), {}, ValueError, r"shifts\[0\]"),
    (([_x(1, 2, 4, 4)], torch.ones(1, 2)), {}, TypeError, "scales must be None or a list"),
    (([_x(1, 2, 4, 4)], [3.0]), {}, TypeError, "not a Tensor"),
    (([torch.ones(1, 2, 4, 4, dtype=torch.int64)],), {}, TypeError, "floating point"),
    (([_x(1, 2, 4, 4), "x"],), {}, TypeError, "not a Tensor"),
    (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 3, 3), None)]}, ValueError, None),
    (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 10, 10), _x(2, 3, 3, 3), None)]}, ValueError, "lands on 5x5"),
    (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 4, 3, 3), None)]}, ValueError, "input channels"),
    (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 1, 1), None)]}, ValueError, r"\(C_out, C_in, 3, 3\)"),
    (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 3, 3))]}, TypeError, "triple"),
    (([_x(1, 2, 4, 4)],), {"convs": _x(3, 3)}, TypeError, "convs must be a list"),
    # rejected by the C++ fast path first: the full path names the problem
    (([_x(1, 2, 4, 4)],), {"size": (-4, 4)}, ValueError, "size must be positive"),
    (([_x(1, 2, 4, 4)], [torch.ones(2)], [torch.zeros(2), torch.zeros(2)]), {}, ValueError, "2 entries for 1 inputs"),
    (([_x(1, 2, 4, 4), _x(1, 2, 3, 3)], [torch.ones(2), torch.ones(3)]), {}, ValueError, r"scales\[1\]"),
])
def test_bad_arguments(backend, args, kwargs, exc, match):
    if backend == "cpu" and not hrnet_fast.backends()["cpu"]:
        pytest.skip("C++ extension not built")
    if match is None:  # a valid call: the conv case that lands exactly
        hrnet_fast.exchange(*args, backend=backend, **kwargs)
        return
    with pytest.raises(exc, match=match):
        hrnet_fast.exchange(*args, backend=backend, **kwargs)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        hrnet_fast.exchange([_x(1, 2, 4, 4)], backend="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_unavailable_cuda_backend_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="backend 'cuda' is unavailable"):
        hrnet_fast.exchange([_x(1, 2, 4, 4)], backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_triton_unavailable_without_gpu_or_interpreter():
    assert not hrnet_fast.backends()["triton"]
    with pytest.raises(RuntimeError, match="backend 'triton' is unavailable"):
        hrnet_fast.exchange([_x(1, 2, 4, 4)], backend="triton")


def test_direct_op_call_is_checked_in_cpp():
    if not hrnet_fast.backends()["cpu"]:
        pytest.skip("C++ extension not built")
    x = _x(1, 2, 4, 4)
    op = torch.ops.hrnet_fast.exchange
    with pytest.raises(ValueError, match=r"scales\[0\] must have shape \(2,\), got \(3,\)"):
        op([x], [torch.ones(3)], [], [4, 4], "nearest", False, True)
    with pytest.raises(ValueError, match="scales has 2 entries for 1 inputs"):
        op([x], [torch.ones(2)] * 2, [], [4, 4], "nearest", False, True)
    with pytest.raises(ValueError, match="mode must be"):
        op([x], [], [], [4, 4], "area", False, True)
    with pytest.raises(ValueError, match="larger than the output size"):
        op([x], [], [], [2, 2], "nearest", False, True)
    with pytest.raises(TypeError, match=r"shifts\[0\] must be floating point"):
        op([x], [], [torch.ones(2, dtype=torch.int64)], [4, 4], "nearest", False, True)
    bwd = torch.ops.hrnet_fast.exchange_backward
    with pytest.raises(ValueError, match="must be the same 4-D shape"):
        bwd(torch.ones(1, 2, 3, 3), x, [None], [4, 4], [False], [], "nearest", False, True)
    with pytest.raises(ValueError, match="out .* is needed when relu is true"):
        bwd(x, None, [None], [4, 4], [False], [], "nearest", False, True)
    with pytest.raises(ValueError, match=r"inputs\[0\] is needed: the gradient of scales\[0\] reads it"):
        bwd(x, x, [None], [4, 4], [False], [torch.ones(2)], "nearest", False, True)
    with pytest.raises(ValueError, match=r"input_sizes has 2 values and channels_last 2 for 1 inputs"):
        bwd(x, x, [None], [4, 4], [False, False], [], "nearest", False, True)
    with pytest.raises(ValueError, match=r"inputs\[0\] has shape \(1, 2, 4, 4\), not \(1, 2, 2, 2\)"):
        bwd(torch.ones(1, 2, 2, 2), None, [x], [2, 2], [False], [], "nearest", False, False)
