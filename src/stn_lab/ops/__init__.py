"""Opt-in speed-ups for the CPU, each a drop-in for a plain PyTorch op.

Every op here computes what its PyTorch counterpart computes (same parameters, same state dict,
same results up to fp32 rounding), checked by an equivalence test in ``tests/test_fast_paths.py``.
They were measured on the CPU; they give the same results on any device. A model or distortion
opts in by importing the op from here instead of ``torch``:

* :class:`~stn_lab.ops.input_grad_conv.InputGradConv2d` for ``nn.Conv2d``: the input gradient of a
  convolution with few input channels (the classifier's first conv behind an STN); it is a plain
  ``nn.Conv2d`` wherever that path does not apply (e.g. off the CPU);
* :func:`~stn_lab.ops.affine_grid.affine_grid` for ``F.affine_grid``: a batch of affine grids as
  one GEMM against a cached basis.

Each docstring says why its op is faster; how much faster is measured by ``make bench`` and kept
in the performance notes, not in the code.
"""
