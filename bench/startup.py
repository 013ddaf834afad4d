"""What a fresh process pays to import the model stack (torch, diffusers' FLUX transformer and VAE, peft) and to
exit after it: plain imports, against ``fluxsr_core.model_stack.import_model_stack`` (the cyclic GC paused while
importing, what it made frozen: the interpreter's teardown then skips it too).

    python bench/startup.py [--repeats 3]

Each figure is the median of fresh processes with one intra-op thread; "process" is the whole process, exit included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAIN = ("import diffusers.models.autoencoders.autoencoder_kl, diffusers.models.transformers.transformer_flux, "
         "peft, torch")
STACK = "from fluxsr_core.model_stack import import_model_stack; import_model_stack()"
TIMED = "import time; t = time.perf_counter(); {imports}; print(time.perf_counter() - t)"


def _run(code: str) -> tuple[float, float]:
    """(seconds the code printed, seconds the whole process took)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1]), time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cases = {"plain imports": TIMED.format(imports=PLAIN), "import_model_stack": TIMED.format(imports=STACK)}
    for name, code in cases.items():
        runs = [_run(code) for _ in range(args.repeats)]
        imports = statistics.median(r[0] for r in runs)
        whole = statistics.median(r[1] for r in runs)
        print(f"{name:20s} import {imports:5.1f} s   process {whole:5.1f} s   (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
