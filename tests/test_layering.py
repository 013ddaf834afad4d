"""Imports point one way: fluxsr_core never pulls in Prefect or storage formats."""

import subprocess
import sys


def test_core_imports_no_prefect_or_storage():
    code = (
        "import sys, pkgutil, importlib, fluxsr_core\n"
        "for m in pkgutil.walk_packages(fluxsr_core.__path__, 'fluxsr_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'storage', 'tasks', 'flows', 'webdataset', 'zarr')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
