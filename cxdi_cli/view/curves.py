"""Pictures of 1-D curves: PRTF and FRC/FSC (what `resolve-prt` writes) and any other curves in a file.

One `CurveSet` per group of curves under /entry_1, thresholds dashed (PRTF 1/e; FRC 0.5, 1/7 and the
file's half-bit curve, from `analysis.resolution`), and where the curve first crosses each threshold,
as q and half-period d = 1/(2q).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from cxdi_cli import io
from cxdi_cli.io.cxi import as_text
from cxdi_cli.view.picture import CurveSet

_X_NAMES = re.compile(r"^(q|freq|frequency|spatial_frequency|k|shell|radius)(_|$)", re.I)
#: 1-D datasets beside the curves that are not curves themselves (ring sizes, weights, alternative axes).
_AUX_NAMES = re.compile(r"^(n|count|counts|npix|n_pixels|n_voxels|pixels|voxels|weight|weights|"
                        r"nyquist|nyquist_fraction|ring|rings|shell_index)(_|$)", re.I)
_INV_M = ("1/m", "m^-1", "m-1", "m**-1", "1/meter", "inv_m")


def _is_threshold(name: str) -> bool:
    n = name.lower()
    return any(w in n for w in ("threshold", "half_bit", "halfbit", "one_bit", "1bit", "criterion"))


def _units(ds) -> str:
    u = ds.attrs.get("units")
    if u is None:
        return ""
    return u.decode() if isinstance(u, bytes) else str(u)


def _axis(name: str, units: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Values and label of an axis in display units: spatial frequencies in nm⁻¹, lengths in nm."""
    u = units.strip().lower().replace(" ", "")
    base = re.sub(r"_(inv_m|per_m|inv_nm|per_nm|nm|m|nm-1|m-1|px-1|pixel-1)$", "", name)
    if u in _INV_M or (not u and re.search(r"_(inv|per)_m$", name)):
        return values * 1e-9, f"{base} (nm⁻¹)"
    if u in ("1/nm", "nm^-1", "nm-1") or (not u and re.search(r"(_(inv|per)_nm|_nm-1)$", name)):
        return values, f"{base} (nm⁻¹)"
    if u in ("1/pixel", "1/px", "pixel^-1") or (not u and name.endswith("_px-1")):
        return values, f"{base} (1/pixel)"
    if u == "m" or (not u and name.endswith("_m")):
        return values * 1e9, f"{base} (nm)"
    if u == "nm" or (not u and name.endswith("_nm")):
        return values, f"{base} (nm)"
    return values, f"{name} ({units})" if units else name


def _default_thresholds(group: str, names: Sequence[str]) -> list[tuple[str, float]]:
    """The thresholds `resolve-prt` uses (`cxdi_cli.prtf`): PRTF 1/e (Chapman 2006); FRC/FSC 0.5 and
    1/7 (the half-bit curve depends on the ring sizes, so it comes from the file)."""
    from cxdi_cli.analysis import resolution as prtf  # noqa: PLC0415 - the one place the threshold values live

    text = (group.rsplit("/", 1)[-1] + " " + " ".join(names)).lower()
    out: list[tuple[str, float]] = []
    if "prtf" in text:
        out.append(("1/e", float(prtf.PRTF_THRESHOLD)))
    if "frc" in text or "fsc" in text:
        out += [(k, float(v)) for k, v in prtf.THRESHOLDS.items()]
    return out


def curve_crossings(cs: CurveSet) -> list[tuple[str, float | None]]:
    """Where the first curve first drops below each threshold (from ring 1 outward, `prtf.crossing`);
    None when it stays above to the last ring."""
    from cxdi_cli.analysis import resolution as prtf  # noqa: PLC0415

    if not cs.curves or not cs.thresholds:
        return []
    y = np.asarray(cs.curves[0][1], float)
    curve = prtf.Curve(q=np.asarray(cs.x, float), nyquist_fraction=np.zeros_like(y), value=y,
                       count=np.ones_like(y))
    return [(label, prtf.crossing(curve, np.asarray(t, float))) for label, t in cs.thresholds]


def crossing_notes(cs: CurveSet) -> list[str]:
    """'1/e: q = 0.031 nm⁻¹ (d = 16.1 nm)' per threshold, d = 1/(2q) the half-period (DESIGN §1)."""
    inv_nm = "nm⁻¹" in cs.xlabel
    notes = []
    for label, q in curve_crossings(cs):
        if q is None:
            notes.append(f"{label}: above to the last ring")
        elif q > 0:
            unit = "nm" if inv_nm else "px" if "pixel" in cs.xlabel or "px" in cs.xlabel else ""
            d = f" (d = {1 / (2 * q):.3g}{' ' + unit if unit else ''})" if inv_nm or unit else ""
            notes.append(f"{label}: q = {q:.3g}{' nm⁻¹' if inv_nm else ''}{d}")
    return notes


def curves_from_h5(f, name: str) -> list[CurveSet]:
    """Every group of 1-D curves under /entry_1 (process groups skipped), one CurveSet per group.

    The x axis is the dataset the NXdata `axes` attribute names, else one named q… / freq… / k…,
    else `nyquist_fraction`, else the sample index; spatial frequencies in 1/m are shown in nm⁻¹.
    Datasets named *threshold* / *half_bit* are drawn as thresholds (PRTF 1/e and FRC 1/7 when the
    file has none); ring sizes and weights are not drawn; scalars become notes (lengths in nm)."""
    if "/entry_1" not in f:
        return []
    groups: dict[str, dict[str, Any]] = {}
    skip = re.compile(r"/(process_\d+|instrument_\d+|image_\d+)(/|$)")
    for dpath in io.list_datasets(f, 0):
        parent, _, key = dpath.rpartition("/")
        if not dpath.startswith("/entry_1/") or skip.search(parent[len("/entry_1"):] + "/"):
            continue
        d = f[dpath]
        if d.dtype.kind in "biuf" and (d.ndim == 1 and d.shape[0] >= 2 or d.ndim == 0):
            groups.setdefault(parent, {})[key] = d
    default = as_text(f["/entry_1"].attrs.get("default", ""))
    first = f"/entry_1/{default}".rstrip("/.") if default else ""
    sets = []
    for path in sorted(groups, key=lambda p: (p != first, p)):
        members = groups[path]
        g = f[path]
        scalars = {k: d for k, d in members.items() if d.ndim == 0}
        arrays = {k: d for k, d in members.items() if d.ndim == 1}
        if not arrays:
            continue
        xname = None
        if "axes" in g.attrs:
            cand = as_text(g.attrs["axes"])
            xname = cand if cand in arrays else None
        if xname is None:
            names = sorted(arrays)
            xname = next((k for k in names if _X_NAMES.search(k) and not _is_threshold(k)), None) \
                or next((k for k in names if k.lower().startswith("nyquist")), None)
        signal = as_text(g.attrs.get("signal", ""))
        candidates = [k for k in arrays if k != xname and not _AUX_NAMES.search(k)]
        if xname:
            n = arrays[xname].shape[0]
        elif signal in arrays:
            n = arrays[signal].shape[0]
        elif candidates:
            lengths = [arrays[k].shape[0] for k in candidates]
            n = max(set(lengths), key=lengths.count)
        else:
            continue
        if xname:
            x, xlabel = _axis(xname, _units(arrays[xname]), np.asarray(arrays[xname][()], float))
        else:
            x, xlabel = np.arange(n, dtype=float), "index"
        curves, thresholds = [], []
        for k in sorted(candidates, key=lambda k: (k != signal, k)):
            if arrays[k].shape[0] != n:
                continue
            y = np.asarray(arrays[k][()], float)
            (thresholds if _is_threshold(k) else curves).append((k, y))
        notes = []
        for k, d in sorted(scalars.items()):
            v, label = _axis(k, _units(d), np.asarray(d[()], float))
            if _is_threshold(k):
                thresholds.append((k, float(v)))
            else:
                notes.append(f"{label} = {float(v):.4g}")
        if not curves:
            continue
        have = {lab.lower().replace("-", "_") for lab, _ in thresholds}
        thresholds = [t for t in _default_thresholds(path, [c[0] for c in curves]) if t[0] not in have] + thresholds
        title = path.replace("/entry_1", "").strip("/") or name
        ylabel = curves[0][0] if len(curves) == 1 else ""
        cs = CurveSet(title=title, x=x, xlabel=xlabel, curves=curves, thresholds=thresholds,
                      ylabel=ylabel, notes=notes)
        cs.notes += crossing_notes(cs)
        sets.append(cs)
    return sets


__all__ = ["crossing_notes", "curve_crossings", "curves_from_h5"]
