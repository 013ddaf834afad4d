"""fluxsr_core: the ML of fluxsr, free of Prefect and of storage formats.

Time convention (FluxSR's, and FLUX/diffusers'), frozen for the whole package:
t in [0, 1], t = 0 is data, t = 1 is noise, ``x_t = (1 - t)·x_0 + t·ε`` and a model
predicts the velocity ``v ≈ ε - x_0``. The transformer receives t in [0, 1]
(diffusers multiplies by 1000 inside). Code for methods whose papers run time the
other way (OFTSR) converts at its boundary with a named ``<from>_to_<to>`` function.
"""

__version__ = "0.1.0"
