"""fluxsr_core: the ML of fluxsr, free of Prefect and of storage formats.

Time convention (FluxSR's, and FLUX/diffusers'), frozen for the whole package:
t in [0, 1], t = 0 is data, t = 1 is noise, ``x_t = (1 - t)·x_0 + t·ε`` and a model
predicts the velocity ``v ≈ ε - x_0``. The transformer receives t in [0, 1]
(diffusers multiplies by 1000 inside). Code for methods whose papers run time the
other way (OFTSR) converts at its boundary with a named ``<from>_to_<to>`` function.
"""

__version__ = "0.1.0"


def _install_log_filters() -> None:
    """Drop one known-harmless start-up message, before the import that logs it can run.

    bitsandbytes (pulled in by pyiqa; imported by peft and diffusers, so by everything that
    loads a model) logs, from ``bitsandbytes.backends.cpu.ops`` at import time on CPUs with
    AVX512-BF16, a warning that its optional ``kernels`` package (a 4-bit CPU GEMM we never
    use: fluxsr quantizes nothing) is missing. Only that message, and only when the cause is
    the missing package, is dropped; every other bitsandbytes message passes.
    """
    import logging

    def keep(record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community"):
            return True
        cause = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (isinstance(cause, ModuleNotFoundError) and cause.name == "kernels")

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(keep)


_install_log_filters()
