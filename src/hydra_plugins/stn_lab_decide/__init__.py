"""stn_lab's sequential seed sweeper for Hydra (``hydra/sweeper=decide``).

Hydra finds sweeper plugins only in the ``hydra_plugins`` namespace package, so the sweeper
lives here and the rest of stn_lab stays where it is (:mod:`stn_lab.seed_rounds`,
:mod:`stn_lab.sequential`).
"""
