"""Simulated experiments with known truth, written the way beamlines write them: the 2D kinds
(`pattern2d`, on the detectors of `detector`), the 3D tilt series (`tilt3d`), their registry (`kinds`).

May import the base and every stage. `simulate(kind, out_dir, **options)` runs one kind."""
from cxdi_cli.sim.kinds import KINDS, simulate

__all__ = ["KINDS", "simulate"]
