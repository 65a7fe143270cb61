"""cli stage of bids-jdam: the command-line programs.

Importing it points library caches to a writable folder when ``$HOME`` is not writable (containers run with any
uid, Apptainer mounts a read-only home); see :mod:`bids_jdam.runtime.cache_dirs`.
"""

from bids_jdam.runtime.cache_dirs import ensure_writable_cache_dirs

ensure_writable_cache_dirs()
