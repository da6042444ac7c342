"""stn_lab: an experiment framework for Spatial Transformer Networks (Jaderberg et al. 2015).

Plain PyTorch modules hold the maths (``stn_lab.models``), LightningDataModules supply the
(distorted) images (``stn_lab.data``), one LightningModule holds the training loop
(``stn_lab.module``) and Hydra configs under ``conf/`` wire them together (``stn_lab.train``).
"""

__version__ = "0.1.0"
