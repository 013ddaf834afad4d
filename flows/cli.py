"""The ``fluxsr`` command line: the app (``cli_app``) with the stage commands (``cli_stages``) and the model
commands (``cli_models``) registered on it."""

from __future__ import annotations

import sys

from flows import cli_stages  # noqa: F401, I001  (registers the stage commands: first in --help)
from flows import cli_models  # noqa: F401  (registers the model commands)
from flows.cli_app import app


def main() -> None:
    app(prog_name="fluxsr")


if __name__ == "__main__":
    sys.exit(main())
