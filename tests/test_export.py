"""cxdi show -o NAME.tif: the numbers for ImageJ — amplitude and phase channels, NaN where masked."""
import numpy as np
import tifffile

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
    strong = amp > 0.1  # phase ramp recovered, global phase removed
    assert np.allclose(data[1][strong] - data[1][16, 16], phase[strong], atol=1e-4)

    intensity = np.full((8, 8), 5.0, np.float32)
    mask = np.zeros((8, 8), np.uint32)
    mask[2, 3] = MASK_BITS["hot"]
    io.write_pattern(str(tmp_path / "p.cxi"), Pattern(intensity, mask), io.make_step("t"))
    assert cli("show", tmp_path / "p.cxi", "-o", tmp_path / "p.tif").exit_code == 0
    back = tifffile.imread(tmp_path / "p.tif")
    assert np.isnan(back[2, 3]) and np.nansum(back) == 5.0 * 63
