"""Transform families: each file defines one parameterisation of the sampling grid.

A family knows its number of parameters, its identity parameters and how to turn a batch of
parameters into a sampling grid. Adding a family means one new file here and one YAML file in
``conf/transform/``.
"""

from stn_lab.models.transforms.base import MatrixTransform, TransformFamily

__all__ = ["MatrixTransform", "TransformFamily"]
