"""Defaults of the phasing stage that the command line shows in its help.

No imports on purpose: `commands/phase.py` reads these at import time, and `cxdi --help` must not
load numpy. `runs.Options` takes its defaults from here (the one place they are written)."""

#: The default recipe, run left to right (why these steps: see `cxdi_cli.phasing.runs`).
DEFAULT_RECIPE = "hio**600,er**200,ml**100"

#: The default partial-coherence model (`--psf`; why: see `cxdi_cli.phasing.runs`).
DEFAULT_PSF = "auto"
