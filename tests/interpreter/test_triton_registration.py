"""The Triton ops' torch.library registration: schemas and autograd.

opcheck's fake-tensor and compile checks cannot run under the interpreter
(fake tensors have no data to interpret), so they live in the GPU suite."""
import torch

import hrnet_fast.triton  # noqa: F401  registers the ops

CHECKS = ("test_schema", "test_autograd_registration")


def _ok(result):
    assert all(v == "SUCCESS" for v in result.values()), result


def test_exchange_op_schema_and_autograd():
    xs = [torch.randn(1, 3, 6, 4, requires_grad=True), torch.randn(1, 3, 3, 2, requires_grad=True),
          torch.randn(1, 3, 2, 2, requires_grad=True)]
    sc = [(torch.rand(3) + 0.5).requires_grad_(), (torch.rand(3) + 0.5).requires_grad_()]
    sh = [torch.randn(3, requires_grad=True)]
    _ok(torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton.default,
                              (xs, sc, [0, 2], sh, [1], [], [], [], [], [6, 4], "bilinear", False, True),
                              test_utils=CHECKS))


def test_exchange_op_with_conv_terms_schema_and_autograd():
    xs = [torch.randn(1, 3, 6, 4, requires_grad=True)]
    sc, sh = [torch.rand(3) + 0.5], [torch.randn(3)]
    a = torch.randn(1, 4, 12, 8, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    _ok(torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton.default,
                              (xs, sc, [0], sh, [0], [a], [w], [b], [0], [6, 4], "nearest", False, True),
                              test_utils=CHECKS))
