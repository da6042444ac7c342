"""The measurements behind ``python -m stn_lab.bench``, one module per job.

- :mod:`~stn_lab.benchmarks.workloads`: the models, batch and turn sizes every measurement
  shares, how a workload is built (through :func:`stn_lab.build.build`) and the plain PyTorch
  loop that is the reference;
- :mod:`~stn_lab.benchmarks.throughput`: img/s per model and image size, STN/CNN and
  channels-last/NCHW step ratios, and the data pipeline's rate;
- :mod:`~stn_lab.benchmarks.overhead`: stn_lab's Lightning path against the plain loop, and
  Lightning's floor;
- :mod:`~stn_lab.benchmarks.processes`: whole training processes: peak RSS, the anchor against
  the PyTorch tutorial, and the localisers' accuracy;
- :mod:`~stn_lab.benchmarks.tutorial`: the PyTorch STN tutorial's loop, the anchor's reference;
- :mod:`~stn_lab.benchmarks.report`: the Markdown sections and how ``bench/results.md`` is
  refreshed.
"""
