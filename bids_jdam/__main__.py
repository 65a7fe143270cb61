"""``python -m bids_jdam`` runs the BIDS-App."""

from bids_jdam.cli.run import main

raise SystemExit(main())
