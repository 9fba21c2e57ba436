"""Triton backend (placeholder until the kernels land)."""


def exchange(inputs, scales, shifts, size, mode, align_corners, relu):
    raise RuntimeError("hrnet_fast: the Triton backend is not implemented yet")


def exchange_conv(inputs, scales, shifts, convs, size, mode, align_corners, relu):
    raise RuntimeError("hrnet_fast: the Triton backend is not implemented yet")
