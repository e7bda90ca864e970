"""Sample data: a procedural phantom (tests) and an MNI152-derived cohort (the demo)."""

from vae3d.sample_data.cohort import CohortSpec, thick_slice_copy, write_cohort
from vae3d.sample_data.lesions import insert_lesions
from vae3d.sample_data.phantom import phantom

__all__ = ["CohortSpec", "insert_lesions", "phantom", "thick_slice_copy", "write_cohort"]
