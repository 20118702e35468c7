"""File formats (the bottom layer with `fft` and `model`): CXI patterns and reconstructions, raw
detector frames, TIFF, `file.h5::/path` addressing, `-` for standard streams, atomic writes."""
from cxdi_cli.io.cxi import (
    list_datasets,
    make_step,
    open_h5,
    read_array,
    read_geometry,
    read_pattern,
    read_provenance,
    read_reconstruction,
    write_lima,
    write_pattern,
    write_reconstruction,
    write_results,
    write_tiff,
    write_tiff_raw,
)
from cxdi_cli.io.paths import atomic_output, check_memory, local_input, sniff, split_url

__all__ = [
    "atomic_output", "check_memory", "list_datasets", "local_input", "make_step", "open_h5", "read_array",
    "read_geometry", "read_pattern", "read_provenance", "read_reconstruction", "sniff", "split_url",
    "write_lima", "write_pattern", "write_reconstruction", "write_results", "write_tiff",
    "write_tiff_raw",
]
from cxdi_cli.io.frames import FrameStack, iter_frames, logbook, open_frames, parse_frames  # noqa: E402

__all__ += ["FrameStack", "iter_frames", "logbook", "open_frames", "parse_frames"]
from cxdi_cli.io.series import Series, read_series, write_series  # noqa: E402

__all__ += ["Series", "read_series", "write_series"]
