"""Bias-field correction with ANTs N4, so that intensity scaling later sees a flat field (7T needs it most)."""

from __future__ import annotations

from pathlib import Path

import ants
import numpy as np


def n4_correct(in_path: Path, out_path: Path, *, shrink_factor: int = 4) -> None:
    """Write the N4-corrected image of ``in_path``, fitted inside the head (N4 needs positive data: clip at 0)."""
    raw = ants.image_read(str(in_path))
    image = raw.new_image_like(np.clip(raw.numpy(), 0, None))
    head = ants.get_mask(image, cleanup=0)
    corrected = ants.n4_bias_field_correction(image, mask=head, shrink_factor=shrink_factor)
    ants.image_write(corrected, str(out_path))
