"""deployments: prefect.yaml (deployments, work pool, schedules) and ``python -m deployments.setup`` (pool, gpu limit, deploy)."""
