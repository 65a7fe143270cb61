"""The methods: one registry entry each (build, train, predict), and model directories (save, load, share).

The built-in methods are registered in :data:`bids_jdam.methods.registry.METHODS` on import, in this order.

Import ``METHODS`` from here (not from the registry module) so that the built-in entries are always present.
"""

# isort: off - the import order is the registration order (the CLI lists methods in it)
from bids_jdam.methods import (
    cyclegan,  # noqa: F401
    diffusion,  # noqa: F401
    regression,  # noqa: F401
    residual,  # noqa: F401
)

# isort: on
from bids_jdam.methods.registry import METHODS, Method

# bids-jdam-train's default: the method that came closest to the goal (posterior mean as accurate as the
# L1 U-Net, calibrated spread) in benchmarks/results/quality-x86_64-intel-xeon-2cpu.md. The paper's method is "jdam".
DEFAULT_METHOD = "jdam-residual"

__all__ = ["DEFAULT_METHOD", "METHODS", "Method"]
