"""Pure geometry: sampling grids, the homography and thin-plate-spline solves, cached bases.

Free functions on tensors, no ``nn.Module`` and nothing else of stn_lab, so that the transform
families (``stn_lab.models.transforms``) and the data distortions (``stn_lab.data.distortions``)
build on the same maths.

Coordinate convention, shared by every function here (it is ``F.grid_sample``'s):

* a point is ``(x, y)`` in normalised coordinates: x runs from -1 (left edge) to 1 (right edge),
  y from -1 (top edge) to 1 (bottom edge), so y points *down* as the image is displayed;
* ``align_corners`` says what +-1 means: the centres of the corner pixels (``True``) or the outer
  edges of the corner pixels (``False``, pixel ``i`` of ``n`` sits at ``(2 i + 1) / n - 1``);
* a sampling grid ``[N, H, W, 2]`` holds, for each *output* pixel, the input point it samples
  (the backward map of ``grid_sample``); a matrix ``M`` used as a grid moves the image content
  by ``M``'s inverse.
"""
