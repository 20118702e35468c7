"""Reduction: detector frames to one calibrated, centred, masked pattern (`pattern`, `masking`) or a
tilt series to a 3D reciprocal-space volume on the Ewald geometry (`assembly`).

May import the base only (model, fft, geometry, planning, sampling, io)."""
