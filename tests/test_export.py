"""cxdi show -o NAME.tif / NAME.vti: the numbers for ImageJ, napari and ParaView — amplitude and phase
(channels, or VTK point arrays) with the voxel size, intensity with NaN where masked."""
import numpy as np
import pytest
import tifffile

from cxdi_cli import io
from cxdi_cli.analysis import align
from cxdi_cli.model import MASK_BITS, DataError, Geometry, Pattern, Reconstruction, Run, wavelength_from_kev
from cxdi_cli.view import export, render, vtk
from cxdi_cli.view.reconstructions import crop_box


def test_reconstruction_and_pattern_to_tiff(cli, tmp_path):
    yy, xx = np.mgrid[-16:16, -16:16]
    amp = np.exp(-(yy**2 + xx**2) / 50.0)
    phase = 0.01 * xx
    obj = (amp * np.exp(1j * (phase + 2.0))).astype(np.complex64)  # + a global phase of 2 rad
    rec = Reconstruction(runs=[Run(obj=obj, support=amp > 0.1)], pixel_size=(20e-9, 20e-9))
    io.write_reconstruction(str(tmp_path / "r.cxi"), rec, io.make_step("t"))
    r = cli("show", tmp_path / "r.cxi", "-o", tmp_path / "r.tif")
    assert r.exit_code == 0, r.stderr
    with tifffile.TiffFile(tmp_path / "r.tif") as t:
        data = t.asarray()
        assert t.series[0].axes == "CYX" and data.dtype == np.float32
        assert abs(t.imagej_metadata["spacing"] - 0.02) < 1e-9 and t.imagej_metadata["unit"] == "um"
    assert np.allclose(data[0], amp, atol=1e-6)
    strong = amp > 0.1  # phase ramp recovered, global phase removed (the true phase is odd about the
    assert np.allclose(data[1][strong], phase[strong], atol=1e-4)  # centre of a symmetric support: mean 0

    intensity = np.full((8, 8), 5.0, np.float32)
    mask = np.zeros((8, 8), np.uint32)
    mask[2, 3] = MASK_BITS["hot"]
    io.write_pattern(str(tmp_path / "p.cxi"), Pattern(intensity, mask), io.make_step("t"))
    assert cli("show", tmp_path / "p.cxi", "-o", tmp_path / "p.tif").exit_code == 0
    back = tifffile.imread(tmp_path / "p.tif")
    assert np.isnan(back[2, 3]) and np.nansum(back) == 5.0 * 63


def test_tiff_and_png_show_the_same_phase(tmp_path):
    """Export and the PNG picture remove the global phase the same way (support-weighted sum)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[-12:12, -12:12]
    amp = np.exp(-((yy - 3) ** 2 + xx**2) / 30.0) * (1 + 0.5 * (xx > 0))   # asymmetric: weightings differ
    obj = (amp * np.exp(1j * (0.05 * yy + 0.3 * (xx > 2) + 1.1 + 0.01 * rng.random(amp.shape)))).astype(np.complex64)
    support = amp > 0.2 * amp.max()
    io.write_reconstruction(str(tmp_path / "r.cxi"), Reconstruction(runs=[Run(obj=obj, support=support)]),
                            io.make_step("t"))
    planes, axes, _ = export.tiff_image(str(tmp_path / "r.cxi"))
    expected = np.angle(align.remove_global_phase(obj, support))
    assert axes == "CYX" and np.allclose(planes[1], expected, atol=1e-6)
    assert abs(np.angle(np.sum(planes[0][support] * np.exp(1j * planes[1][support])))) < 1e-5  # mean phase 0
    # the PNG colours come from the same deglobalised object
    pic = render.reconstruction_picture(io.read_reconstruction(str(tmp_path / "r.cxi")))
    ref = render.reconstruction_picture(Reconstruction(runs=[Run(obj=align.remove_global_phase(obj, support),
                                                                 support=support)]))
    assert np.allclose(pic.panels[0].rgb, ref.panels[0].rgb, atol=1e-5)


def _read_vti(path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A reader written from VTK's XML format description, independent of cxdi's writer: the ImageData
    attributes, the point arrays as (z, y, x) and the field arrays; base64 header (UInt64 byte count)
    and data encoded apart."""
    import base64
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert root.get("type") == "ImageData" and root.get("byte_order") == "LittleEndian"
    assert root.get("header_type") == "UInt64"
    image = root.find("ImageData")
    x0, x1, y0, y1, z0, z1 = map(int, image.get("WholeExtent").split())
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    types = {"Float32": "<f4", "Float64": "<f8", "UInt8": "u1"}

    def decode(el) -> np.ndarray:
        text = "".join(el.text.split())
        nbytes = int(np.frombuffer(base64.b64decode(text[:12]), "<u8")[0])  # 8 bytes -> 12 base64 chars
        data = base64.b64decode(text[12:])
        assert len(data) == nbytes
        return np.frombuffer(data, types[el.get("type")])

    points = {el.get("Name"): decode(el).reshape(shape) for el in image.find("Piece/PointData")}
    fields = {el.get("Name"): decode(el) for el in image.findall("FieldData/DataArray")}
    meta = {"spacing": tuple(map(float, image.get("Spacing").split())),
            "origin": tuple(map(float, image.get("Origin").split())),
            "scalars": image.find("Piece/PointData").get("Scalars")}
    return meta, points, fields


def _object3d():
    rng = np.random.default_rng(11)
    zz, yy, xx = np.mgrid[:20, :24, :28]
    support = ((zz - 8) ** 2 + (yy - 13) ** 2 + (xx - 17) ** 2) < 25  # a ball off centre
    phase = 0.1 * xx + 0.05 * zz
    obj = (support * (1 + 0.2 * rng.random(support.shape)) * np.exp(1j * (phase + 1.0))).astype(np.complex64)
    return obj, support


def test_3d_object_to_vti_for_paraview(cli, tmp_path):
    obj, support = _object3d()
    pixel = (30e-9, 20e-9, 10e-9)  # anisotropic voxels: (z, y, x)
    io.write_reconstruction(str(tmp_path / "r.cxi"), Reconstruction(runs=[Run(obj=obj, support=support)],
                                                                    pixel_size=pixel), io.make_step("t"))
    r = cli("show", tmp_path / "r.cxi", "-o", tmp_path / "r.vti")
    assert r.exit_code == 0, r.stderr
    meta, points, fields = _read_vti(tmp_path / "r.vti")
    expected = align.remove_global_phase(obj, support)  # the phase as `cxdi show` draws it
    assert set(points) == {"amplitude", "phase", "support"} and meta["scalars"] == "amplitude"
    assert np.array_equal(points["amplitude"], np.abs(expected).astype(np.float32))
    assert np.allclose(points["phase"][support], np.angle(expected)[support], atol=1e-6)
    assert np.array_equal(points["support"], support.astype(np.uint8))
    assert meta["spacing"] == (10.0, 20.0, 30.0)  # VTK order x, y, z, in nm
    assert meta["origin"] == (-14 * 10.0, -12 * 20.0, -10 * 30.0)  # index n // 2 at 0
    assert np.allclose(fields["voxel_size_m"], [10e-9, 20e-9, 30e-9])
    # --crop-support: the support's box plus the margin, at its place in the field
    r = cli("show", tmp_path / "r.cxi", "-o", tmp_path / "c.vti", "--crop-support")
    assert r.exit_code == 0, r.stderr
    meta_c, crop, _ = _read_vti(tmp_path / "c.vti")
    box = crop_box([support])
    assert crop["amplitude"].shape == tuple(b.stop - b.start for b in box)
    assert np.array_equal(crop["amplitude"], points["amplitude"][box])
    assert meta_c["origin"] == tuple((b.start - n // 2) * s for b, n, s in
                                     zip(box[::-1], support.shape[::-1], meta["spacing"]))


def test_volume_to_vti_intensity_on_the_q_grid(cli, tmp_path):
    geom = Geometry(wavelength=wavelength_from_kev(8.0), distance=5.0, pixel=(75e-6, 75e-6))
    vol = np.random.default_rng(2).poisson(20.0, (10, 12, 14)).astype(np.float32)
    mask = np.zeros(vol.shape, np.uint32)
    mask[5, 5:7, 6:8] = MASK_BITS["beamstop"]
    io.write_pattern(str(tmp_path / "v.cxi"), Pattern(vol, mask, geometry=geom), io.make_step("t"))
    assert cli("show", tmp_path / "v.cxi", "-o", tmp_path / "v.vti").exit_code == 0
    meta, points, fields = _read_vti(tmp_path / "v.vti")
    got = points["intensity"]
    assert np.array_equal(np.isnan(got), mask > 0) and np.array_equal(got[mask == 0], vol[mask == 0])
    dq = geom.pixel[1] / (geom.wavelength * geom.distance)  # p/(λD) in 1/m
    assert meta["spacing"] == pytest.approx((dq * 1e-6,) * 3, rel=1e-9)  # µm⁻¹
    assert meta["origin"] == pytest.approx((-7 * dq * 1e-6, -6 * dq * 1e-6, -5 * dq * 1e-6), rel=1e-9)
    assert np.allclose(fields["q_step_inv_m"], dq)


def test_3d_object_tiff_is_a_hyperstack_with_the_voxel_size(cli, tmp_path):
    obj, support = _object3d()
    io.write_reconstruction(str(tmp_path / "r.cxi"), Reconstruction(runs=[Run(obj=obj, support=support)],
                                                                    pixel_size=(30e-9, 20e-9, 10e-9)),
                            io.make_step("t"))
    r = cli("show", tmp_path / "r.cxi", "-o", tmp_path / "r.tif")
    assert r.exit_code == 0, r.stderr
    with tifffile.TiffFile(tmp_path / "r.tif") as t:
        data = t.asarray()
        meta = t.imagej_metadata
        assert t.series[0].axes == "ZCYX" and data.shape == (20, 2, 24, 28) and data.dtype == np.float32
        assert meta["channels"] == 2 and meta["slices"] == 20 and meta["unit"] == "um"
        assert meta["spacing"] == pytest.approx(0.03)  # z voxel in µm
        page = t.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1 / 0.01) and yres[0] / yres[1] == pytest.approx(1 / 0.02)
    expected = align.remove_global_phase(obj, support)
    assert np.allclose(data[:, 0], np.abs(expected), atol=1e-6)
    assert np.allclose(data[:, 1][support], np.angle(expected)[support], atol=1e-6)


def test_vti_errors_leave_no_output(cli, tmp_path):
    obj, support = _object3d()
    io.write_reconstruction(str(tmp_path / "r.cxi"), Reconstruction(runs=[Run(obj=obj, support=support)]),
                            io.make_step("t"))
    r = cli("show", tmp_path / "r.cxi", "-o", tmp_path / "x.vti", "--run", 3)
    assert r.exit_code == 1 and "no run 3" in r.stderr and not (tmp_path / "x.vti").exists()
    with pytest.raises(DataError):
        vtk.write_vti(str(tmp_path / "y.vti"), {"a": np.zeros((2, 3)), "b": np.zeros((3, 2))}, (1, 1), (0, 0))
    assert not (tmp_path / "y.vti").exists()
