"""Where the public FHIR R4 examples are: ``../shared/fhir-examples`` beside the checkout (as on
developer machines and in CI), or the folder named by ``BRIDGE_FHIR_EXAMPLES``."""

from __future__ import annotations

import os
from pathlib import Path

EXAMPLES_DIR = Path(os.environ.get("BRIDGE_FHIR_EXAMPLES",
                                   Path(__file__).resolve().parents[3] / "shared" / "fhir-examples"))
# In CI the examples must be there: a missing folder fails the run instead of skipping its tests.
EXAMPLES_MISSING = not EXAMPLES_DIR.is_dir() and os.environ.get("CI") != "true"
