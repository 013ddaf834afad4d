"""fluxsr starts without bitsandbytes' warning about its optional ``kernels`` package.

bitsandbytes (a pyiqa dependency, imported by peft and diffusers) logs at import, on CPUs with
AVX512-BF16 only, "Failed to load CPU gemm_4bit_forward from kernels-community: No module named
'kernels'. Please make sure you already `pip install kernels` ...". ``fluxsr_core/__init__.py``
filters that one message. So that the test means something on any CPU, the subprocesses run with
a ``sitecustomize`` that makes bitsandbytes believe the CPU has AVX512-BF16; a control run
without fluxsr_core checks that the message does appear then.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from helpers import REPO, run_cli

MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"

FORCE_AVX512BF16 = '''
import importlib.abc, importlib.machinery, sys


class _Patch(importlib.abc.MetaPathFinder):
    """After bitsandbytes.functional runs, has_avx512bf16() says True (before backends.cpu.ops reads it)."""

    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Patch())
'''


@pytest.fixture()
def env(tmp_path) -> dict:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(FORCE_AVX512BF16)
    path = os.pathsep.join(p for p in (str(shim), str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_no_kernels_warning_at_start_up(env, tmp_path):
    from PIL import Image

    image = tmp_path / "lr.png"
    Image.new("RGB", (16, 16), (90, 120, 30)).save(image)
    control = None
    if importlib.util.find_spec("kernels") is None:  # the message is about that package being missing
        control = subprocess.Popen([sys.executable, "-c", "import peft"], env=env, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        shown = run_cli(env, "config", "show")
        assert "kernels" not in shown.stderr, shown.stderr
        # a command that loads the model: imports diffusers and peft, so bitsandbytes
        upscaled = run_cli(env, "upscale", str(image), "-o", str(tmp_path / "sr"), timeout=240)
        assert (tmp_path / "sr" / "lr.png").is_file()
        assert MESSAGE not in upscaled.stderr and "pip install kernels" not in upscaled.stderr, upscaled.stderr
    finally:
        if control is not None:
            _, err = control.communicate(timeout=240)
    if control is not None:
        assert control.returncode == 0, err
        assert MESSAGE in err, f"without fluxsr_core's filter the warning should show (bitsandbytes changed?): {err}"
