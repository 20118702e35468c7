"""Analysis of reconstructions: registration (`align`), selection, averaging and modes (`averaging`),
and resolution from the PRTF and from Fourier ring/shell correlation (`resolution`).

May import the base only (model, fft, geometry, planning, sampling, io)."""
