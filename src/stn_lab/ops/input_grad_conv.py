"""A ``Conv2d`` whose input gradient is one GEMM plus shifted adds, for few input channels.

Behind a spatial transformer, the classifier's first convolution must pass a gradient back to
its input (the STN's output), which a plain CNN never asks for. On the CPU, oneDNN computes that
input gradient slowly when the convolution has 1-3 input channels, a large share of the step.
Written as one GEMM (kernel^T x output gradient) and shifted adds of the resulting columns
(col2im by hand), it is several times faster.

The forward pass and the weight gradient stay with PyTorch's own kernels. The custom path is
taken only on the CPU in fp32 (not under autocast), for stride 1, no dilation, one group, and
only when the input needs a gradient. Anywhere else this is a plain ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_FAST_CHANNELS = 3  # above this, oneDNN's own input gradient is the faster one


def input_gradient(grad_out: torch.Tensor, weight: torch.Tensor, padding: int, in_size: tuple):
    """d(loss)/d(input) of a stride-1 convolution: GEMM columns added back at their offsets.

    One GEMM, ``kernel^T [C_in*kh*kw, C_out] @ grad^T [C_out, N*oh*ow]``, gives every kernel
    offset's contribution as a contiguous ``[N, oh, ow]`` plane. A channels-last ``grad_out``
    is already ``[N*oh*ow, C_out]`` in memory, so nothing is copied (a batched matmul against
    the expanded kernel would copy it). The adds go in two passes (kernel columns into rows,
    then rows into the image): ``kh + kw`` adds instead of ``kh * kw``.
    """
    n, out_c, oh, ow = grad_out.shape
    _, in_c, kh, kw = weight.shape
    per_position = grad_out.permute(0, 2, 3, 1).reshape(-1, out_c)
    cols = (weight.reshape(out_c, -1).t() @ per_position.t()).view(in_c, kh, kw, n, oh, ow)
    height, width = (s + 2 * padding for s in in_size)
    rows = grad_out.new_zeros(in_c, kh, n, oh, width)
    for j in range(kw):
        rows[..., j : j + ow] += cols[:, :, j]
    padded = grad_out.new_zeros(in_c, n, height, width)
    for i in range(kh):
        padded[:, :, i : i + oh] += rows[:, i]
    return padded[:, :, padding : height - padding, padding : width - padding].transpose(0, 1)


class _InputGradConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = (
            input_gradient(grad_out, weight, ctx.padding, x.shape[-2:])
            if ctx.needs_input_grad[0]
            else None
        )
        _, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, weight, [weight.shape[0]] if ctx.has_bias else None,
            [1, 1], [ctx.padding] * 2, [1, 1], False, [0, 0], 1,
            [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
        )  # fmt: skip
        return grad_x, grad_w, grad_b, None


class InputGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state dict) with the faster CPU input gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_path(x):
            return _InputGradConv.apply(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (
            x.requires_grad
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")  # under bf16 autocast conv2d runs in bf16
            and self.in_channels <= MAX_FAST_CHANNELS
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and self.padding[0] == self.padding[1]
        )
