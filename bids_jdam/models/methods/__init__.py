"""The built-in methods, registered in :data:`bids_jdam.models.registry.METHODS` on import, in this order.

Import ``METHODS`` from here (not from the registry module) so that the built-in entries are always present.
"""

# isort: off - the import order is the registration order (the CLI lists methods in it)
from bids_jdam.models.methods import diffusion  # noqa: F401
from bids_jdam.models.methods import regression  # noqa: F401
from bids_jdam.models.methods import residual  # noqa: F401
from bids_jdam.models.methods import cyclegan  # noqa: F401
# isort: on
from bids_jdam.models.registry import METHODS, Method

__all__ = ["METHODS", "Method"]
