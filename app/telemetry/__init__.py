"""Telemetry: traces (tracing.py, with the resolver extension in extension.py and the
request middleware in requests.py), Prometheus metrics (metrics.py), JSON logs (logs.py) and
the debug waterfall (waterfall.py)."""
