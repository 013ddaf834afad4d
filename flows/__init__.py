"""flows: Prefect flows that chain the stages (wiring only), and the ``fluxsr`` CLI that runs them."""
