"""The benchmark: press-to-command-center latency, sustained throughput, shedding and attack resilience.

Run it with `python -m bench` (or `make bench`); see bench/README.md.
"""

__all__: list[str] = []
