"""The benchmarks of `make bench` (``python -m benchmarks``), outside the installed package."""
