"""A time-resolved 2D experiment with known truth: the tungsten letters of `pattern2d` and a tungsten
disc (a crystallite) at their centre that grows frame by frame.

Each frame is computed as the 2D kinds compute one pattern (`pattern2d._Experiment`: the exact far
field of the fine-grid specimen, integrated over each pixel's area, on a detector with the module-gap
cross and a beamstop with its rod), then Poisson noise is drawn per frame and the frames are cut to the
default crop around the beam, as `preprocess` would (the beam centre is put on a pixel, so no
interpolation). The incident fluence is the same for every frame: `photons` is what the first frame
scatters, and later frames scatter more as the disc adds matter.

Written into the output folder: `series.cxi` (the frames, `io.series` layout), `expected.cxi` (the
noise-free frames, same layout), `truth.cxi` (one entry per frame in time order, each the band-limited
object on the crop's grid, params `frame_index`, `time_s`, `disc_radius_m`) and `experiment.json`."""
from __future__ import annotations

import math
import os
import shlex
from typing import Any

import numpy as np

from cxdi_cli import geometry
from cxdi_cli.model import Geometry, Reconstruction, Run
from cxdi_cli.sim import pattern2d as p2d
from cxdi_cli.sim.detector import beamstop_shadow, make_defects
from cxdi_cli.sim.output import seed_value, write_json

#: Largest disc radius (last frame), as a fraction of the specimen size S (the letters span S; the
#: disc covers the centre of the cross between them and the inner strokes of the letters).
GROWTH_RADIUS = 0.2


def disc_coverage(n: int, pitch: float, radius: float, ss: int = 3) -> np.ndarray:
    """Covered fraction of each pixel of an n x n centred grid of `pitch` by a disc of `radius` (m) at
    r = 0, from ss x ss sub-samples per pixel (anti-aliased edge, as the letters are drawn)."""
    y, x = p2d._subgrid(n, pitch, ss)
    return p2d._bin((y * y + x * x <= radius * radius).astype(float), ss)


def simulate_series(out_dir: str | os.PathLike, *, seed: int = 0, size: int = 160, photons: float = 1e8,
                    distance: float = 5.0, energy_kev: float = 8.0, pixel: float = 75e-6, frames: int = 20,
                    oversampling: float = 4.0, thickness: float = 150e-9, growth: float = GROWTH_RADIUS,
                    frame_time: float = 1e-3, gap_cross_near_beam: bool = False, beamstop: float | None = None,
                    rod_angle: float = 35.0, gap_through_beam: bool = False,
                    pixel_samples: int = p2d.PIXEL_SUBSAMPLES,
                    command: str = "cxdi simulate series") -> dict[str, Any]:
    """Write a `frames`-long series in which a tungsten disc grows from nothing to radius `growth` x S
    at the centre of the tungsten letters (module docstring); returns the experiment dict. `photons`:
    scattered photons on the detector in the first frame; `frame_time`: seconds between frames."""
    p2d._common_checks(size, photons, distance, energy_kev, pixel, frames, oversampling)
    p2d._check(isinstance(frames, (int, np.integer)) and 2 <= frames, f"--frames {frames}: a series needs at least 2")
    p2d._check(np.isfinite(thickness) and 1e-9 <= thickness <= 5e-6, f"--thickness {thickness}: must be 1e-9 to 5e-6 m")
    p2d._check(np.isfinite(growth) and 0.0 < growth <= 0.3, f"--growth {growth}: must be above 0 and at most 0.3 "
                                                            "of the specimen size")
    p2d._check(np.isfinite(frame_time) and frame_time > 0, f"--frame-time {frame_time}: must be > 0 s")
    seed = seed_value(seed)
    exp, bs, d = p2d._experiment(out_dir, size=size, photons=photons, distance=distance, energy_kev=energy_kev,
                                 pixel=pixel, oversampling=oversampling, near_cross=gap_cross_near_beam,
                                 fraction=(0.0, 0.0), through_beam=gap_through_beam, pixel_samples=pixel_samples,
                                 beamstop=beamstop, rod_angle=rod_angle)
    from cxdi_cli import io  # noqa: PLC0415

    letters = p2d.tungsten_object(exp.specimen_size, exp.fine_pitch, thickness, energy_kev)
    delta, beta = p2d.tungsten_delta_beta(energy_kev)
    wave = np.exp(-2j * np.pi * (delta - 1j * beta) * thickness / exp.wavelength) - 1.0
    cover_letters = (letters / wave).real                    # the letters' covered fraction per fine pixel
    n_fine = letters.shape[0]
    radii = growth * exp.specimen_size * np.arange(frames) / (frames - 1)
    shadow = beamstop_shadow(exp.shape, exp.centre, bs[0], bs[1], bs[2])
    gap_idx = list(range(exp.chip, exp.chip + exp.gap))
    rng = np.random.default_rng(seed)
    defects = make_defects(rng, exp.shape, exp.centre, gap_rows=gap_idx, gap_cols=gap_idx, beamstop_radius=bs[0],
                           rod_width=bs[1], rod_direction=bs[2], n_hot=0, n_dead=0, lit=None,
                           hot_range=(1.0, 1.0), shadow=shadow)
    mask_full = defects.mask()
    rows, cols = geometry.crop_window(exp.centre, exp.crop)
    mask = mask_full[rows, cols]
    good = mask == 0
    n = exp.crop
    counts = np.empty((frames, n, n), np.float32)
    expected_crops = np.empty((frames, n, n), np.float32)
    truth_runs: list[Run] = []
    power0 = None
    scattered = []
    for k, r in enumerate(radii):
        cover = np.maximum(cover_letters, disc_coverage(n_fine, exp.fine_pitch, float(r)))
        rho = wave * cover
        power = float(np.sum(np.abs(rho) ** 2))
        power0 = power if power0 is None else power0
        expected, truth, support = exp.pattern_and_truth(rho)   # scaled to `photons` on the detector
        gain = power / power0                                   # same fluence: more matter, more photons
        expected = expected * gain
        scattered.append(float(expected.sum()))
        expected_crops[k] = np.where(good, expected[rows, cols], 0)
        counts[k] = rng.poisson(expected_crops[k])
        truth_runs.append(Run(obj=(truth * math.sqrt(gain)).astype(np.complex64), support=support,
                              metrics={"support_size": int(support.sum())},
                              params={"what": "truth: band-limited specimen on the crop, q = 0 at N//2",
                                      "frame_index": k, "time_s": k * frame_time, "disc_radius_m": float(r),
                                      "crop": n}))
    geo = Geometry(wavelength=exp.wavelength, distance=exp.distance, pixel=(exp.pixel, exp.pixel),
                   centre=(float(n // 2), float(n // 2)))
    params = dict(seed=seed, size=size, photons=photons, distance=distance, energy_kev=energy_kev, pixel=pixel,
                  frames=frames, oversampling=oversampling, thickness=thickness, growth=growth,
                  frame_time=frame_time, gap_cross_near_beam=gap_cross_near_beam, beamstop=beamstop,
                  rod_angle=rod_angle, gap_through_beam=gap_through_beam, pixel_samples=pixel_samples)
    step = io.make_step(command, params)
    times = np.arange(frames) * frame_time
    io.write_series(str(d / "series.cxi"), io.Series(intensity=counts, mask=mask, time=times, geometry=geo), step)
    io.write_series(str(d / "expected.cxi"), io.Series(intensity=expected_crops, mask=mask, time=times,
                                                        geometry=geo), step)
    io.write_reconstruction(str(d / "truth.cxi"), Reconstruction(
        runs=truth_runs, pixel_size=(exp.truth_pitch, exp.truth_pitch),
        geometry=Geometry(wavelength=exp.wavelength, distance=exp.distance, pixel=(exp.pixel, exp.pixel)),
        extra={"series": {"frames": frames, "time_s": times.tolist()}}), step)
    info = exp.base_dict("series", frames, seed, defects, bs)
    info.update({
        "frame_shape": [n, n],
        "frame_time_s": frame_time,
        "photons_per_frame": scattered,
        "disc_radius_m": [float(r) for r in radii],
        "disc_radius_px": [float(r / exp.truth_pitch) for r in radii],
        "specimen": {"material": "W", "thickness_m": thickness, "delta": delta, "beta": beta,
                     "letters": "C X / D I", "growing": "tungsten disc at the centre"},
        "files": {"series": "series.cxi", "expected": "expected.cxi", "truth": "truth.cxi"},
        "gap_through_beam": bool(gap_through_beam), "pixel_samples": exp.pixel_samples,
        "preprocess": None,
        "next": (f"cxdi phase --series {shlex.quote(str(d / 'series.cxi'))} -o "
                 f"{shlex.quote(str(d / 'series-runs.cxi'))}"),
    })
    write_json(d / "experiment.json", info)
    return info
