"""cxdi show: every kind of cxdi file renders; picture sizes; masked pixels in the mask colour; q axes,
scale bars and phase colours follow the physics; text pictures have the requested width."""
from __future__ import annotations

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.view import render
from cxdi_cli.view import terminal as tr
from cxdi_cli.model import MASK_BITS, Geometry, Pattern, Reconstruction, Run, wavelength_from_kev

N = 64
GEOM = Geometry(wavelength=wavelength_from_kev(8.0), distance=5.0, pixel=(75e-6, 75e-6))
MAGENTA = np.array(render.MASK_RGB)


def _png(path) -> np.ndarray:
    """PNG as uint8 RGB (rows top to bottom)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    return np.rint(img[..., :3] * 255).astype(int)


def _disc(shape, radius, centre=None):
    grids = np.meshgrid(*[np.arange(n) - (n // 2 if centre is None else c) for n, c in
                          zip(shape, centre or [0] * len(shape))], indexing="ij")
    return sum(g.astype(float) ** 2 for g in grids) < radius ** 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("show")
    rng = np.random.default_rng(7)
    step = io.make_step("test")
    # 2D pattern of a disc, Poisson noise, beamstop block on q = 0 and a module gap column
    obj = _disc((N, N), 9.5)
    amp = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj))))
    intensity = rng.poisson(1e5 * (amp / amp.max()) ** 2).astype(np.float32)
    mask = np.zeros((N, N), np.uint32)
    mask[N // 2 - 3:N // 2 + 4, N // 2 - 3:N // 2 + 4] = MASK_BITS["beamstop"]
    mask[:, 10] |= MASK_BITS["gap"]
    mask[5, 50] = MASK_BITS["hot"]
    io.write_pattern(str(d / "p2.cxi"), Pattern(intensity=intensity, mask=mask, geometry=GEOM), step)
    # 3D volume, beamstop tube along z
    vol = rng.poisson(5.0, size=(24, 32, 40)).astype(np.float32) + 1
    m3 = np.zeros(vol.shape, np.uint32)
    m3[:, 14:18, 18:22] = MASK_BITS["beamstop"]
    io.write_pattern(str(d / "v3.cxi"), Pattern(intensity=vol, mask=m3, geometry=GEOM), step)
    # runs: the same object up to a global phase, with a phase ramp of 0.05 rad/pixel along x
    x = np.arange(N) - N // 2
    o = (obj * np.exp(1j * 0.05 * x)[None, :]).astype(np.complex64)
    runs = [Run(obj=o * np.exp(1j * (0.7 + k)), support=obj.copy(),
                metrics={"llk": 1.25 + k, "llk_free": 1.5 + k, "support_size": int(obj.sum())}) for k in range(4)]
    io.write_reconstruction(str(d / "runs.cxi"), Reconstruction(runs=runs, pixel_size=(10e-9, 10e-9)), step)
    io.write_reconstruction(str(d / "avg.cxi"), Reconstruction(runs=runs[:1], pixel_size=(10e-9, 10e-9)), step)
    # 3D object off centre (+5 along x), 20 nm voxels
    o3 = _disc((32, 32, 32), 7, centre=(16, 16, 21)).astype(np.complex64)
    io.write_reconstruction(str(d / "r3.cxi"), Reconstruction(runs=[Run(obj=o3, support=np.abs(o3) > 0)],
                                                              pixel_size=(20e-9,) * 3), step)
    # resolution curves as resolve-prt-like results
    q = np.linspace(0.0, 0.05, 60)
    io.write_results(str(d / "prtf.h5"), {"prtf/q_inv_nm": q, "prtf/prtf": np.exp(-q / 0.02),
                                          "frc/q_inv_nm": q, "frc/frc": np.exp(-(q / 0.03) ** 2),
                                          "frc/half_bit_threshold": 0.2 + 0 * q, "frc/resolution_nm": 12.0},
                     step, signal="prtf/prtf")
    (d / "bad.cxi").write_text("not a cxi file\n")
    return d


# --------------------------------------------------------------------------- diffraction data


def test_pattern_png_size_and_mask_pixels_exactly_in_mask_colour(files, tmp_path):
    pic = render.load_picture(str(files / "p2.cxi"))
    fig = render.render_figure(pic, width=500, dpi=100)
    out = tmp_path / "p.png"
    render.save_png(fig, str(out), dpi=100)
    img = _png(out)
    assert img.shape[1] == 500 and 300 < img.shape[0] < 800
    masked = ~Pattern(intensity=np.ones((N, N)), mask=io.read_pattern(str(files / "p2.cxi")).mask).measured
    ax = fig.axes[0]
    x0, x1, y0, y1 = pic.panels[0].extent
    H = img.shape[0]
    # every masked data pixel's centre lands on a magenta PNG pixel
    for i, j in zip(*np.nonzero(masked)):
        qx = x0 + (j + 0.5) / N * (x1 - x0)
        qy = y0 + (i + 0.5) / N * (y1 - y0)
        dx, dy = ax.transData.transform((qx, qy))
        assert (img[int(H - dy), int(dx)] == MAGENTA).all(), (i, j)
    # every magenta PNG pixel lies on a masked data pixel (the colour map never makes magenta)
    rows, cols = np.nonzero((img == MAGENTA).all(axis=-1))
    assert rows.size > 49 * 4  # the beamstop alone spans 7x7 data pixels, each several screen pixels
    q = ax.transData.inverted().transform(np.column_stack([cols + 0.5, H - rows - 0.5]))
    jj = np.floor((q[:, 0] - x0) / (x1 - x0) * N).astype(int).clip(0, N - 1)
    ii = np.floor((q[:, 1] - y0) / (y1 - y0) * N).astype(int).clip(0, N - 1)
    assert masked[ii, jj].mean() > 0.97  # edge pixels of the resampling may round to a neighbour
    near = np.zeros_like(masked)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            near |= np.roll(np.roll(masked, di, 0), dj, 1)
    assert near[ii, jj].all()


def test_every_hot_pixel_visible_when_the_picture_is_smaller_than_the_data(tmp_path):
    rng = np.random.default_rng(3)
    n = 600
    data = rng.poisson(20.0, size=(n, n)).astype(np.float32)
    mask = np.zeros((n, n), np.uint32)
    hot = [(37, 411), (123, 58), (300, 300), (451, 500), (590, 7)]
    for i, j in hot:
        mask[i, j] = MASK_BITS["hot"]
    io.write_pattern(str(tmp_path / "big.cxi"), Pattern(intensity=data, mask=mask, geometry=GEOM), io.make_step("t"))
    pic = render.load_picture(str(tmp_path / "big.cxi"))
    fig = render.render_figure(pic, width=420)
    render.save_png(fig, str(tmp_path / "big.png"))
    img = _png(tmp_path / "big.png")
    magenta = (img == MAGENTA).all(axis=-1)
    x0, x1, y0, y1 = pic.panels[0].extent
    H = img.shape[0]
    for i, j in hot:  # a one-pixel hot pixel, 4x smaller than a screen pixel, still shows
        dx, dy = fig.axes[0].transData.transform((x0 + (j + 0.5) / n * (x1 - x0), y0 + (i + 0.5) / n * (y1 - y0)))
        r, c = int(H - dy), int(dx)
        assert magenta[r - 2:r + 3, c - 2:c + 3].any(), (i, j)
    assert magenta.sum() < 5 * 16  # and stays a dot, not a blob


def test_pattern_q_axes_from_geometry(files):
    pic = render.load_picture(str(files / "p2.cxi"))
    dq_nm = GEOM.pixel[1] / (GEOM.wavelength * GEOM.distance) * 1e-9  # p/(λD), in nm⁻¹
    x0, x1, y0, y1 = pic.panels[0].extent
    # q = 0 at index N // 2: pixel edges at -(N//2 + 1/2) dq ... (N - 1 - N//2 + 1/2) dq
    assert x0 == pytest.approx(-(N // 2 + 0.5) * dq_nm, rel=1e-9)
    assert x1 == pytest.approx((N - 1 - N // 2 + 0.5) * dq_nm, rel=1e-9)
    assert (y0, y1) == pytest.approx((x0, x1), rel=1e-9)
    assert "nm⁻¹" in pic.panels[0].xlabel
    # the log colour scale spans the measured intensities
    pat = io.read_pattern(str(files / "p2.cxi"))
    meas = pat.intensity[pat.measured]
    assert pic.panels[0].scale.vmax == pytest.approx(np.log10(meas.max()), rel=1e-6)
    lin = render.load_picture(str(files / "p2.cxi"), log=False)
    assert lin.panels[0].scale.vmax == pytest.approx(meas.max(), rel=1e-6)
    assert "log" not in lin.panels[0].scale.label


def test_volume_central_slices_and_slice_option(files, cli, tmp_path):
    pic = render.load_picture(str(files / "v3.cxi"))
    assert [p.rgb.shape[:2] for p in pic.panels] == [(32, 40), (24, 40), (24, 32)]
    # the beamstop tube along z: masked in the central z slice, a band in the y and x slices
    assert pic.panels[0].masked[14:18, 18:22].all() and pic.panels[0].masked.sum() == 16
    assert pic.panels[1].masked[:, 18:22].all() and pic.panels[2].masked[:, 14:18].all()
    one = render.load_picture(str(files / "v3.cxi"), slice_spec="y=3")
    assert len(one.panels) == 1 and one.panels[0].rgb.shape[:2] == (24, 40) and "y = 3" in one.panels[0].title
    assert not one.panels[0].masked.any()  # row 3 is far from the beamstop
    out = tmp_path / "v.png"
    r = cli("show", files / "v3.cxi", "-o", out, "--width", 900)
    assert r.exit_code == 0, r.stderr
    img = _png(out)
    assert img.shape[1] == 900
    assert (img == MAGENTA).all(axis=-1).sum() > 16 * 3
    r = cli("show", files / "v3.cxi", "-o", tmp_path / "w.png", "--slice", "q=4")
    assert r.exit_code == 2 and "--slice" in r.stderr
    r = cli("show", files / "p2.cxi", "-o", tmp_path / "w.png", "--slice", "z")
    assert r.exit_code == 2 and not (tmp_path / "w.png").exists()


# --------------------------------------------------------------------------- reconstructions


def test_reconstruction_phase_as_hue_amplitude_as_brightness(files):
    from matplotlib.colors import rgb_to_hsv

    pic = render.load_picture(str(files / "avg.cxi"), crop_support=False)  # --full: the whole field
    assert pic.kind == "reconstruction" and len(pic.panels) == 1
    panel = pic.panels[0]
    hsv = rgb_to_hsv(panel.rgb)
    obj = _disc((N, N), 9.5)
    x = np.arange(N) - N // 2
    # global phase removed: the ramp 0.05 rad/px, mean phase 0 over the support
    ramp = np.broadcast_to(0.05 * x[None, :], (N, N))
    expected = ramp - np.angle(np.sum(np.exp(1j * ramp)[obj]))
    hue_phase = np.angle(np.exp(2j * np.pi * hsv[..., 0]))
    assert np.abs(np.angle(np.exp(1j * (hue_phase[obj] - expected[obj])))).max() < 1e-3
    assert np.allclose(hsv[..., 2][obj], 1.0, atol=1e-6) and np.allclose(hsv[..., 2][~obj], 0.0)
    # scale bar: 1-2-5 length near a quarter of the 640 nm field -> 100 nm = 10 pixels of 10 nm
    assert panel.scalebar == (pytest.approx(10.0), "100 nm")
    assert "llk=1.25" in pic.title


def test_run_grid_titles_metrics_and_global_phase_invariance(files, cli, tmp_path):
    pic = render.load_picture(str(files / "runs.cxi"))
    assert pic.kind == "runs" and len(pic.panels) == 4 and pic.ncols == 2
    for k, p in enumerate(pic.panels):
        assert f"run {k + 1}" in p.title and f"llk={1.25 + k:.4g}" in p.title and "llk_free" in p.title
        # runs differ only by a global phase, which is not physical: identical pictures
        assert np.allclose(p.rgb, pic.panels[0].rgb, atol=1e-5)
    runs = io.read_reconstruction(str(files / "runs.cxi"))
    runs.runs[1].metrics["failed"] = True
    io.write_reconstruction(str(tmp_path / "f.cxi"), runs, io.make_step("t"))
    titles = [p.title for p in render.load_picture(str(tmp_path / "f.cxi")).panels]
    assert "FAILED" in titles[1] and not any("FAILED" in t for t in titles[:1] + titles[2:])
    one = render.load_picture(str(files / "runs.cxi"), run=3)
    assert one.kind == "reconstruction" and "run 3 of 4" in one.title
    out = tmp_path / "runs.png"
    r = cli("show", files / "runs.cxi", "-o", out, "--width", 700, "--dpi", 80)
    assert r.exit_code == 0, r.stderr
    assert _png(out).shape[1] == 700
    r = cli("show", files / "runs.cxi", "-o", out, "--run", 9)
    assert r.exit_code == 2 and "runs 1 to 4" in r.stderr


def test_average_file_shows_its_modes(files, tmp_path):
    rec = io.read_reconstruction(str(files / "avg.cxi"))
    rec.extra = {"mode_weights": [0.9, 0.1]}
    m1 = rec.runs[0].obj
    m2 = (np.roll(m1, 3, axis=1) * 0.3).astype(np.complex64)
    io.write_reconstruction(str(tmp_path / "a.cxi"), rec, io.make_step("t"), arrays={"mode_1": m1, "mode_2": m2})
    pic = render.load_picture(str(tmp_path / "a.cxi"))
    assert [p.title for p in pic.panels] == ["average", "mode 1  weight 0.900", "mode 2  weight 0.100"]
    assert np.allclose(pic.panels[1].rgb, pic.panels[0].rgb, atol=1e-5)  # mode 1 is the average here


def test_crop_support_keeps_support_and_margin(files):
    pic = render.load_picture(str(files / "avg.cxi"), crop_support=True)
    obj = _disc((N, N), 9.5)
    rows = np.nonzero(obj.any(axis=1))[0]
    extent = rows.max() - rows.min() + 1
    margin = max(4, int(np.ceil(render.CROP_MARGIN * extent)))
    assert pic.panels[0].rgb.shape[:2] == (extent + 2 * margin,) * 2
    assert pic.panels[0].brightness.sum() == pytest.approx(obj.sum(), rel=1e-5)  # nothing of the object lost


def test_3d_reconstruction_slices_through_support_and_projections(files, tmp_path):
    pic = render.load_picture(str(files / "r3.cxi"), crop_support=False)
    # three orthogonal slices and the projection along the beam, side by side
    assert len(pic.panels) == 4 and pic.ncols == 4
    assert [p.title for p in pic.panels] == ["slice z = 16", "slice y = 16", "slice x = 21", "projection along z"]
    # (x = 21: through the object, 5 voxels off the array centre)
    # the slice through the centre of a ball of radius 7 shows its full disc
    assert (pic.panels[0].brightness > 0.5).sum() == _disc((32, 32), 7).sum()
    # the projection: the amplitude summed along z, normalised to its largest value
    o3 = _disc((32, 32, 32), 7, centre=(16, 16, 21)).astype(float)
    assert np.allclose(pic.panels[3].brightness, o3.sum(axis=0) / o3.sum(axis=0).max(), atol=1e-6)
    assert pic.panels[0].scalebar[1] == "100 nm"  # a quarter of 640 nm -> 100 nm = 5 voxels
    fig = render.render_figure(pic, width=800)
    render.save_png(fig, str(tmp_path / "r3.png"))
    assert _png(tmp_path / "r3.png").shape[1] == 800
    # by default the four panels frame the ball (radius 7: 13 voxels across) plus 4 voxels each side
    crop = render.load_picture(str(files / "r3.cxi"))
    assert [p.rgb.shape[:2] for p in crop.panels] == [(21, 21)] * 4
    assert crop.panels[2].extent == (16 - 10.5, 16 + 10.5, 16 - 10.5, 16 + 10.5)  # (y, z) around (16, 16)
    assert crop.panels[0].extent == (21 - 10.5, 21 + 10.5, 16 - 10.5, 16 + 10.5)  # (x, y): x off centre
    assert np.allclose(crop.panels[3].brightness.sum(), pic.panels[3].brightness.sum())  # nothing lost


def test_3d_slices_cut_through_the_centre_of_mass(tmp_path):
    """A stray support voxel far from the object moves the support's box, not where the slices cut."""
    o3 = _disc((40, 40, 40), 5, centre=(12, 25, 18)).astype(np.complex64)
    support = np.abs(o3) > 0
    support[38, 2, 38] = True  # empty support voxel (amplitude 0)
    io.write_reconstruction(str(tmp_path / "s.cxi"), Reconstruction(runs=[Run(obj=o3, support=support)]),
                            io.make_step("t"))
    pic = render.load_picture(str(tmp_path / "s.cxi"))
    assert [p.title for p in pic.panels[:3]] == ["slice z = 12", "slice y = 25", "slice x = 18"]
    one = render.load_picture(str(tmp_path / "s.cxi"), slice_spec="x=20")
    assert len(one.panels) == 1 and one.panels[0].title == "slice x = 20"  # --slice: no projection


def test_default_crop_frames_a_small_object_in_a_big_field(tmp_path, cli):
    """cxdi show of a reconstruction shows the support plus a margin, not a dot in a black field;
    --full shows the whole field; --crop-support (the default now) is still accepted."""
    n = 256
    yy, xx = np.mgrid[:n, :n]
    support = ((yy - 90) / 12.0) ** 2 + ((xx - 170) / 20.0) ** 2 < 1  # an ellipse off centre: 23 x 39 px
    obj = (support * np.exp(0.02j * xx)).astype(np.complex64)
    io.write_reconstruction(str(tmp_path / "s.cxi"), Reconstruction(runs=[Run(obj=obj, support=support)],
                                                                    pixel_size=(10e-9, 10e-9)), io.make_step("t"))
    rows, cols = np.nonzero(support)
    pic = render.load_picture(str(tmp_path / "s.cxi"))
    (panel,) = pic.panels
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    mh, mw = (max(4, int(np.ceil(render.CROP_MARGIN * e))) for e in (h, w))
    assert panel.rgb.shape[:2] == (h + 2 * mh, w + 2 * mw)
    x0, x1, y0, y1 = panel.extent  # the frame in the file's pixels: the support's box plus the margins
    assert (x0, x1) == (cols.min() - mw - 0.5, cols.max() + mw + 0.5)
    assert (y0, y1) == (rows.min() - mh - 0.5, rows.max() + mh + 0.5)
    assert panel.brightness.sum() == pytest.approx(support.sum(), rel=1e-5)  # the whole object is in
    assert any("cropped to the support" in note for note in pic.notes)
    full = render.load_picture(str(tmp_path / "s.cxi"), crop_support=False)
    assert full.panels[0].rgb.shape[:2] == (n, n) and full.panels[0].extent is None
    for flags in ((), ("--crop-support",), ("--full",)):
        r = cli("show", tmp_path / "s.cxi", "--terminal", "--ascii", "--width", 160, *flags)
        assert r.exit_code == 0, r.stderr
        assert ("cropped to the support" in r.stdout) == (flags != ("--full",))


# --------------------------------------------------------------------------- curves


def test_prtf_frc_curves_with_thresholds(files, cli, tmp_path):
    pic = render.load_picture(str(files / "prtf.h5"))
    assert pic.kind == "curves"
    by = {cs.title: cs for cs in pic.curves}
    assert pic.curves[0].title == "prtf"  # the NeXus default first
    assert by["prtf"].thresholds == [("1/e", pytest.approx(np.exp(-1)))]
    assert "(nm⁻¹)" in by["prtf"].xlabel and by["prtf"].x[-1] == pytest.approx(0.05)
    assert [t[0] for t in by["frc"].thresholds] == ["0.5", "1/7", "half_bit_threshold"]
    assert "resolution (nm) = 12" in by["frc"].notes
    # PRTF exp(-q / 0.02) drops below 1/e at q = 0.02 nm⁻¹: half-period d = 1/(2q) = 25 nm
    (lab, q), = render.curve_crossings(by["prtf"])
    assert lab == "1/e" and q == pytest.approx(0.02, rel=0.01)
    assert any(n.startswith("1/e: q = 0.02") and "d = 25" in n for n in by["prtf"].notes)
    # FRC exp(-(q/0.03)^2): 0.5 at 0.03 sqrt(ln 2), 1/7 at 0.03 sqrt(ln 7), 0.2 at 0.03 sqrt(ln 5)
    got = dict(render.curve_crossings(by["frc"]))
    assert got["0.5"] == pytest.approx(0.03 * np.sqrt(np.log(2)), rel=0.01)
    assert got["1/7"] == pytest.approx(0.03 * np.sqrt(np.log(7)), rel=0.01)
    assert got["half_bit_threshold"] == pytest.approx(0.03 * np.sqrt(np.log(5)), rel=0.01)
    out = tmp_path / "prtf.png"
    r = cli("show", files / "prtf.h5", "-o", out, "--width", 640)
    assert r.exit_code == 0, r.stderr
    assert _png(out).shape[1] == 640


def test_curves_in_si_units_skip_ring_sizes(tmp_path):
    q = np.linspace(0, 5e7, 40)  # 1/m
    io.write_results(str(tmp_path / "r.h5"), {"fsc/q": q, "fsc/fsc": np.exp(-(q / 3e7) ** 2),
                                              "fsc/count": 4 * np.pi * np.arange(40.0) ** 2 + 1,
                                              "fsc/nyquist_fraction": q / q[-1], "fsc/resolution": 2.5e-8},
                     io.make_step("test"), attrs={"fsc/q": {"units": "1/m"}, "fsc/resolution": {"units": "m"}},
                     signal="fsc/fsc")
    (cs,) = render.load_picture(str(tmp_path / "r.h5")).curves
    assert cs.xlabel == "q (nm⁻¹)" and cs.x[-1] == pytest.approx(0.05)  # 5e7 1/m = 0.05 nm⁻¹
    assert [c[0] for c in cs.curves] == ["fsc"]  # ring sizes and Nyquist fractions are not curves
    assert cs.thresholds == [("0.5", 0.5), ("1/7", pytest.approx(1 / 7))]
    assert cs.notes[0] == "resolution (nm) = 25"


def test_resolve_prt_output_renders(cli, tmp_path):
    """The file `cxdi resolve-prt` writes (FRC of two half-set averages) is drawn with its thresholds."""
    rng = np.random.default_rng(5)
    obj = _disc((N, N), 12).astype(np.complex64)
    step = io.make_step("test")
    for name in ("a", "b"):
        noisy = obj + (0.05 * (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N)))).astype(np.complex64)
        io.write_reconstruction(str(tmp_path / f"{name}.cxi"),
                                Reconstruction(runs=[Run(obj=noisy, support=obj.real > 0)], pixel_size=(10e-9, 10e-9)),
                                step)
    r = cli("resolve-prt", "--half-sets", tmp_path / "a.cxi", tmp_path / "b.cxi", "-o", tmp_path / "frc.h5")
    assert r.exit_code == 0, r.stderr
    pic = render.load_picture(str(tmp_path / "frc.h5"))
    (cs,) = pic.curves
    names = [t[0] for t in cs.thresholds]
    assert {"0.5", "1/7"} <= set(names) and any("half" in n for n in names)
    assert [c[0] for c in cs.curves] == ["frc"] and "nm⁻¹" in cs.xlabel
    # Nyquist of a 10 nm pixel: 1/(2 x 10 nm) = 0.05 nm⁻¹, the last ring lies close to it
    assert 0.04 < cs.x[-1] <= 0.0501 * np.sqrt(2)
    r = cli("show", tmp_path / "frc.h5", "-o", tmp_path / "frc.png", "--width", 600)
    assert r.exit_code == 0 and _png(tmp_path / "frc.png").shape[1] == 600


# --------------------------------------------------------------------------- terminal


def test_terminal_ascii_width_and_mask(files, cli):
    r = cli("show", files / "p2.cxi", "--terminal", "--width", 60)  # not a tty: plain characters
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) > 20 and all(len(ln) == 60 for ln in lines)
    assert "\x1b[" not in r.stdout
    assert tr.MASK_CHAR in "".join(lines[3:])
    r = cli("show", files / "prtf.h5", "--terminal", "--width", 100, "--ascii")
    assert r.exit_code == 0 and all(len(ln) == 100 for ln in r.stdout.splitlines())
    assert "1/e" in r.stdout


def test_terminal_colour_modes(files):
    pic = render.load_picture(str(files / "p2.cxi"))
    for mode in ("truecolor", "256"):
        text = tr.render_text(pic, width=50, mode=mode)
        lines = text.splitlines()
        assert all(tr.visible_len(ln) == 50 for ln in lines)
        assert sum("▀" in ln for ln in lines) == 25  # 64x64 square pixels -> 50 columns x 25 half-block rows
    assert "255;0;255" in tr.render_text(pic, width=64, mode="truecolor")  # masked pixels in magenta
    for name in ("v3.cxi", "runs.cxi", "r3.cxi"):
        text = tr.render_text(render.load_picture(str(files / name)), width=90, mode="truecolor")
        assert {tr.visible_len(ln) for ln in text.splitlines()} == {90}
    assert tr.terminal_mode({"COLORTERM": "truecolor"}, True) == "truecolor"
    assert tr.terminal_mode({"TERM": "xterm-256color"}, True) == "256"
    assert tr.terminal_mode({"COLORTERM": "truecolor"}, False) == "ascii"
    assert tr.terminal_mode({"NO_COLOR": "1", "COLORTERM": "truecolor"}, True) == "ascii"


# --------------------------------------------------------------------------- CLI contract


def test_png_to_stdout(files, cli):
    r = cli("show", files / "avg.cxi", "-o", "-", "--width", 300)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")


def test_full_detector_pattern_q_zero_on_beam_centre(tmp_path):
    data = np.ones((40, 50), np.float32)
    geom = Geometry(wavelength=GEOM.wavelength, distance=GEOM.distance, pixel=GEOM.pixel, centre=(30.0, 12.5))
    io.write_pattern(str(tmp_path / "full.cxi"), Pattern(intensity=data, mask=np.zeros((40, 50), np.uint32),
                                                         geometry=geom), io.make_step("test"))
    x0, x1, y0, y1 = render.load_picture(str(tmp_path / "full.cxi")).panels[0].extent
    dq_nm = GEOM.pixel[1] / (GEOM.wavelength * GEOM.distance) * 1e-9
    # q = 0 in the middle of pixel (30, 12.5): the extent starts 12.5 + 1/2 pixels left of it, 30.5 below
    assert x0 == pytest.approx(-13.0 * dq_nm) and x1 == pytest.approx(37.0 * dq_nm)
    assert y0 == pytest.approx(-30.5 * dq_nm) and y1 == pytest.approx(9.5 * dq_nm)


def test_stdin_input(files, cli, monkeypatch):
    monkeypatch.setattr(io.paths, "_STDIN_CACHE", {})  # stdin is spooled once per process; start afresh
    data = (files / "avg.cxi").read_bytes()
    r = cli("show", "-", "--terminal", "--width", 40, input=data)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("stdin") and all(len(ln) == 40 for ln in r.stdout.splitlines())


def test_errors_and_no_partial_output(files, cli, tmp_path):
    out = tmp_path / "bad.png"
    r = cli("show", files / "bad.cxi", "-o", out)
    assert r.exit_code == 1 and r.stderr.startswith("cxdi show: error:") and "bad.cxi" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    r = cli("show", tmp_path / "missing.cxi", "-o", out)
    assert r.exit_code == 1 and "no such file" in r.stderr
    r = cli("show", files / "p2.cxi")
    assert r.exit_code == 2 and "-o" in r.stderr
    r = cli("show", files / "p2.cxi", "-o", tmp_path / "nodir" / "x.png")
    assert r.exit_code == 1 and "does not exist" in r.stderr
    r = cli("show", files / "p2.cxi", "-o", "-", "--terminal")
    assert r.exit_code == 2


def test_generic_images(files, tmp_path):
    import tifffile

    arr = np.linspace(-1, 1, 30 * 20, dtype=np.float32).reshape(30, 20)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    pic = render.load_picture(str(tmp_path / "a.tif"))
    assert pic.kind == "image" and "linear" in " ".join(pic.notes)
    assert pic.panels[0].rgb.shape[:2] == (30, 20) and pic.panels[0].xlabel == "x (pixel)"
    np.save(tmp_path / "c.npy", (np.ones((16, 16)) * np.exp(0.3j)).astype(np.complex64))
    assert render.load_picture(str(tmp_path / "c.npy")).kind == "reconstruction"
    # a LIMA stack of frames (hard-linked under two paths): the sum of the frames, axes in pixels
    frames = np.stack([np.full((300, 200), k, np.uint32) for k in range(1, 5)])
    io.write_lima(str(tmp_path / "frames.h5"), frames)
    pic = render.load_picture(str(tmp_path / "frames.h5"))
    assert "sum of 4 frames" in pic.title and np.allclose(pic.panels[0].brightness, pic.panels[0].brightness[0, 0])
    fig = render.render_figure(pic, width=300)
    assert fig.axes[0].get_xlim() == pytest.approx((-0.5, 199.5))  # reduced for the screen, axes still in pixels
    one = render.load_picture(f"{files / 'p2.cxi'}::/entry_1/instrument_1/detector_1/data")
    assert one.kind == "pattern" and one.panels[0].masked.sum() > 49


def test_helpers():
    assert render.nice_length(160) == 100 and render.nice_length(0.3) == pytest.approx(0.2)
    assert render.nice_length(7e-7) == pytest.approx(5e-7)
    assert render.parse_slice("y", 3) == (1, None) and render.parse_slice("x=5", 3) == (2, 5)
    assert render.parse_slice("12", 3) == (0, 12)
    rs = tr.resample(np.arange(16.0).reshape(4, 4), 2, 2)
    assert np.allclose(rs, [[2.5, 4.5], [10.5, 12.5]])
    assert tr.resample(np.eye(2), 4, 4).shape == (4, 4)


def test_load_picture_opens_an_hdf5_file_once(files, monkeypatch):
    """Telling what a file holds and reading it is one HDF5 open, for every kind of file."""
    import h5py

    opened = []

    class Counting(h5py.File):
        def __init__(self, name, *args, **kwargs):
            opened.append(str(name))
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", Counting)
    for name in ("p2.cxi", "v3.cxi", "runs.cxi", "avg.cxi", "r3.cxi", "prtf.h5"):
        opened.clear()
        render.load_picture(str(files / name))
        assert len(opened) == 1, (name, opened)
