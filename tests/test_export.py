"""cxdi show -o NAME.tif: the numbers for ImageJ — amplitude and phase channels, NaN where masked."""
import numpy as np
import tifffile

from cxdi_cli.analysis import align
from cxdi_cli.view import export, render
from cxdi_cli import io
from cxdi_cli.model import MASK_BITS, Pattern, Reconstruction, Run


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
