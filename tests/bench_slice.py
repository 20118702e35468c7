"""The slice-against-flat comparison of issue 17 (not a test): `cxdi simulate thick` at its defaults
(128 pixels, 0.03 m, 8 keV: 9.2 depths of field, 121 frames over +-60 deg), then the two routes to a 2D
image of the projection, each phased with the default positivity choice and with --positivity:

    slice: cxdi assemble3d tilts.h5 --slice -o slice.cxi ...   (the curvature-aware central slice)
    flat:  cxdi preprocess tilts.h5 --frames Z:Z+1 -o flat.cxi  (the zero-tilt frame as a flat pattern)

    .venv/bin/python -m tests.bench_slice [SIZE] [SEEDS] [RUNS]     # defaults 128, 1,2,3 and 8

Prints, per route, option and phase seed, the NRMSE against truth.cxi (the true projection) of the run
phase ranks first and the best and median of all runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    seeds = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "1,2,3").split(",")]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    from cxdi_cli import io
    from cxdi_cli.registration import nrms_error

    cxdi = str(Path(sys.executable).with_name("cxdi"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)

        def run(*args: object) -> None:
            subprocess.run([cxdi, *map(str, args), "--threads", "1", "-q"], check=True, cwd=d)

        # thick's defaults are sized for 128 pixels: keep the depth of field ratio at other sizes
        run("simulate", "thick", "-o", d, "--size", size, "--distance", 0.03 * (size / 128) ** 2)
        exp = json.loads((d / "experiment.json").read_text())
        print(f"thick {size}: thickness {exp['thickness_over_dof']:.1f} depths of field, defocus phase at the "
              f"edge {exp['edge_defocus_phase_rad']:.1f} rad, Ewald curvature {exp['edge_curvature_voxels']:.1f} "
              f"voxels, {exp['n_frames']} frames")
        geo = ["--energy", exp["energy_kev"], "--distance", exp["distance_m"], "--pixel", exp["pixel_m"],
               "--centre", ",".join(f"{v:g}" for v in exp["beam_centre"])]
        run("assemble3d", "tilts.h5", "--slice", "-o", "slice.cxi", *geo, "--angles",
            "tilts.h5::/entry_0000/measurement/omega")
        z = exp["zero_tilt_frame"]
        run("preprocess", "tilts.h5", "--frames", f"{z}:{z + 1}", "-o", "flat.cxi", *geo)
        truth = io.read_reconstruction(str(d / "truth.cxi")).runs[0].obj
        print(f"{'route':6} {'positivity':10} {'seed':>4}  {'first':>6} {'best':>6} {'median':>6}")
        for route in ("slice", "flat"):
            for opt in ([], ["--positivity"]):
                for seed in seeds:
                    run("phase", f"{route}.cxi", "-o", "runs.cxi", "--runs", runs, "--seed", seed, *opt)
                    e = [nrms_error(r.obj, truth) for r in io.read_reconstruction(str(d / "runs.cxi")).runs]
                    print(f"{route:6} {'on' if opt else 'auto':10} {seed:4d}  {e[0]:6.3f} {min(e):6.3f} "
                          f"{float(np.median(e)):6.3f}", flush=True)


if __name__ == "__main__":
    main()
