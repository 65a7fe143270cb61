"""Offline paired T1w/FDG-PET phantom: a BIDS dataset with its template-space ground truth (see docs/phantom.md).

Modules: ``model`` (constants and per-subject draws), ``anatomy`` (template-space tissue and head), ``geometry``
(the applied transforms), ``mri`` (native T1w), ``pet`` (uptake and native PET), ``writer`` (BIDS names and
sidecars), ``dataset`` (the whole dataset, atomically).
"""

from bids_jdam.data.phantom.dataset import PhantomTruth, generate_phantom_dataset, is_phantom_dataset, phantom_truth
from bids_jdam.data.phantom.model import PHANTOM_VERSION

__all__ = ["PHANTOM_VERSION", "PhantomTruth", "generate_phantom_dataset", "is_phantom_dataset", "phantom_truth"]
