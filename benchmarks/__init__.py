"""bids-jdam's benchmarks: each one measures the app through its own entry points and formats what it measured.

Run one from the repository root as a module, ``python -m benchmarks.<name>`` (e.g. ``python -m benchmarks.speed
--threads 2``); the Makefile's ``benchmark-*`` targets do. Results go to ``benchmarks/results`` (benchmarks/README.md).
"""
