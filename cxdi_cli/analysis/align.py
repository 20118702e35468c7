"""Alignment of reconstructions (translation, twin, phase ramp, global phase): the analysis stage's name
for `cxdi_cli.registration`, which lives in the base so that phasing (consensus and guided
generations choose runs after aligning them) can use the same primitives. See that module."""
from __future__ import annotations

from cxdi_cli.registration import (align_to, fourier_shift, nrms_error, optimal_scale, phase_ramp,
                                   register_translation, remove_global_phase, twin_image)

__all__ = ["register_translation", "fourier_shift", "phase_ramp", "twin_image", "align_to", "nrms_error",
           "optimal_scale", "remove_global_phase"]
