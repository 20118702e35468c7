"""Phasing, the numerical lens: projections composed into algorithms (`algorithms`), the recipe
language (`recipe`), the support (`support`) and many random starts with their metrics (`runs`).

May import the base only (model, fft, geometry, planning, sampling, io)."""
