"""The prepared phasing job: every option (`Options`), the data in FFT order with the free pixels and
the initial support (`prepare` -> `Problem`), the default recipe for a pattern, and the data-level
metrics (amplitude misfit, noise fraction). The measured reasons for the defaults are in `runs`."""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from cxdi_cli.phasing import algorithms as alg
from cxdi_cli import fft
from cxdi_cli.phasing import generations, kernels, psf as psfm, recipe as rcp, support as sup
from cxdi_cli.phasing import regularise  # noqa: F401 - registers gps, tv, cpower, oss in alg.STEPS
from cxdi_cli.sampling import estimate_oversampling
from cxdi_cli.model import DataError, Pattern, UsageError
from cxdi_cli.phasing.defaults import DEFAULT_PSF, DEFAULT_RECIPE

if TYPE_CHECKING:
    pass


@dataclasses.dataclass
class Options:
    """Every parameter of a phasing job; `as_dict()` is what goes into each run's parameters."""

    recipe: str = DEFAULT_RECIPE
    runs: int = 5
    seed: int | None = None
    positivity: bool | str = "auto"       # True, False, or "auto": decided on probes (_decide_positivity)
    amplitude_bound: float | None = None
    support_threshold: tuple[float, float] = (0.12, 0.1)  # shrink-wrap threshold (of the max), start -> end
    support_smooth: tuple[float, float] | None = None  # shrink-wrap Gaussian sigma, start -> end (pixels);
    # None: (max(1, object extent / 40), 0.5), the extent (pixels) estimated from the initial support
    support_update: int = 20                  # shrink-wrap period (iterations); 0: only `sup` steps
    support_min_fraction: float | None = None  # shrink-wrap never goes below this fraction of the
    # initial support (None: 1/(4 * 2^N) of an autocorrelation support, which spans 2^N times the
    # object, or 1/4 of a given support): a collapse onto a bright speck is refused
    autocorrelation_threshold: float = 0.05   # initial support: autocorrelation > this * max
    autocorrelation_smooth: float = 1.0       # Gaussian sigma (pixels) on the autocorrelation
    free_fraction: float = 0.05               # measured pixels withheld for the free log-likelihood
    free_island: int = 3                      # free islands are cubes of this many pixels across
    record_every: int = 10                    # history every k iterations
    report_every: int = 50                    # progress callback every k iterations
    max_outside: float = 0.1                  # failed run: more than this fraction off the support
    threads: int | None = None                # FFT threads per run
    check_oversampling: bool = True
    psf: str = DEFAULT_PSF                    # partial coherence: auto, off, gaussian:FWHM, lorentzian:FWHM,
    # pseudo-voigt:FWHM,ETA (psf.parse_psf); switched on at `psf_from` of the recipe unless a `psf` step does
    psf_from: float | None = None             # fraction of the recipe's iterations before the PSF is on
    # (None: at the first `ml` step, else at the end of the search: psf_switch_on)
    psf_update: int = 25                      # PSF width refinement every k projections (0: fixed)
    psf_refine: str = "ml"                    # "ml": Poisson ML width; "rl": Richardson-Lucy (psf.py)
    generations: int = 3                      # guided generations (Chen et al. 2007) over the search steps
    guide_above: float = 2.0                  # ... blend only runs whose free LLK exceeds this x the best's
    consensus: bool = True                    # order the runs by their largest agreeing group first
    agree: float = 0.3                        # two runs agree when their distance after alignment is below

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["support_smooth"] = None if self.support_smooth is None else list(pair_schedule(self.support_smooth))
        d["support_threshold"] = list(pair_schedule(self.support_threshold))
        return d


def pair_schedule(v: Any) -> tuple[float, float]:
    """A (start, end) schedule from a number or a pair."""
    if isinstance(v, (int, float)):
        return (float(v), float(v))
    a, b = v
    return (float(a), float(b))


@dataclasses.dataclass
class Problem:
    """The prepared data of a phasing job (FFT order), shared read-only by every run."""

    amp: np.ndarray              # float32 sqrt(photons), 0 where not measured
    kind: np.ndarray             # int8 alg.MASKED / MEASURED / FREE
    support: np.ndarray | None   # bool initial support (None: from the autocorrelation)
    shape: tuple[int, ...]
    seed: int
    steps: tuple[rcp.Item, ...]
    n_iterations: int
    info: dict[str, Any]


def parse_recipe(text: str) -> tuple[rcp.Item, ...]:
    """Parse a recipe against the registered steps (UsageError with the valid names otherwise)."""
    items = rcp.parse(text, alg.step_parameters())
    if not any(s.name in alg.ITERATIVE for s in rcp.flatten(items)):
        raise UsageError(f"recipe {text!r}: no iterative step (one of {', '.join(sorted(alg.ITERATIVE))})")
    return items


def count_iterations(items: tuple[rcp.Item, ...]) -> int:
    """Iterations (FFT-pair steps) of a parsed recipe."""
    return sum(s.count for s in rcp.flatten(items) if s.name in alg.ITERATIVE)


#: The PSF that `--psf auto` starts from (Richardson-Lucy refines it; see the module docstring).
AUTO_PSF = psfm.PsfSpec("gaussian", 1.0, 0.0)
#: "auto": a fitted FWHM below this (pixels) means coherent data: the PSF is dropped for the rest of
#: the run (a Gaussian of 0.6 px puts 5e-4 of its weight on each neighbour)
AUTO_PSF_OFF = 0.6


#: 2D default recipe: its HIO iterations scale with the initial (autocorrelation) support, from this
#: many pixels on (the 256^2 hard tungsten case: 5041 px, 600 HIO iterations)
HIO_REFERENCE_SUPPORT = 5000
#: ... up to this factor
HIO_MAX_SCALE = 4.0


def default_recipe_for(support_px: int) -> str:
    """The default recipe for a 2D pattern whose autocorrelation support has `support_px` pixels: HIO
    600 x clip(support_px / HIO_REFERENCE_SUPPORT, 1, HIO_MAX_SCALE), then ER 200 and ML 100 (a larger
    object needs more HIO iterations; see the module docstring)."""
    scale = min(HIO_MAX_SCALE, max(1.0, support_px / HIO_REFERENCE_SUPPORT))
    return f"hio**{int(round(600 * scale / 10.0)) * 10},er**200,ml**100"


#: 3D default recipe: the default one, then this cut-off (regularise.make_cut): the unmeasured voxels
#: of the shells whose measured voxels hold under 1 photon on average are zeroed. There nothing
#: constrains them and ML fills them with noise: a photon-starved tilt series (96^3, 3e5 photons per
#: frame, +-70 deg; 6 starts from one search) 0.567 -> 0.320 median start, average 0.520 -> 0.242.
#: On bright volumes only the corners beyond the largest measured radius go.
CUT_3D = "cut(photons=1)"
#: The default recipe for a 3D volume: DEFAULT_RECIPE, then the low-signal cut-off `CUT_3D`.
DEFAULT_RECIPE_3D = f"{DEFAULT_RECIPE},{CUT_3D}"


#: "auto" leaves the PSF off on data whose measured power is more than this share photon noise
#: (`noise_fraction`): there the fitted blur (0.86 px on 2e6-photon cells) deconvolves the noise
#: (NRMSE 0.22 against 0.21, the average 0.20 against 0.15); the bright cases lie at 1e-5 to 1.4e-4.
AUTO_PSF_MAX_NOISE = 1e-3


def auto_psf_veto(ndim: int, noise: float) -> str:
    """Why `--psf auto` stays off for these data ("" when it goes on): 3D volumes (their blur, from
    every frame's detector plane, is not isotropic) and photon-limited patterns."""
    if ndim == 3:
        return "a 3D volume (its blur is anisotropic: give --psf MODEL:FWHM to model one)"
    if noise > AUTO_PSF_MAX_NOISE:
        return f"photon-limited data (noise fraction {noise:.2g} > {AUTO_PSF_MAX_NOISE:g}): a fitted blur would deconvolve noise"
    return ""


def psf_switch_on(steps: tuple[rcp.Item, ...]) -> int:
    """The iteration at which the PSF goes on by default: the first `ml` step (the final refinement,
    where a fitted blur sharpens the object without changing which basin the search found), or the
    end of the search when the recipe has no `ml` step."""
    done = 0
    for step in rcp.flatten(steps):
        if step.name == "ml":
            return done
        if step.name in alg.ITERATIVE:
            done += step.count
    return generations.search_iterations(rcp.flatten(steps), alg.ITERATIVE)


def psf_start(text: str) -> psfm.PsfSpec | None:
    """The PSF start of a `--psf` value (None: off); UsageError on a bad value."""
    spec = psfm.parse_psf(text)
    return AUTO_PSF if spec == "auto" else spec  # type: ignore[return-value]


def _free_islands(kind: np.ndarray, centre_radius: float, fraction: float, island: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Mark about `fraction` of the measured pixels FREE, in cubes `island` pixels across, with their
    centro-symmetric mates, none within `centre_radius` pixels of q = 0 (arrays in FFT order)."""
    shape = kind.shape
    measured = kind == alg.MEASURED
    n_meas = int(np.count_nonzero(measured))
    target = fraction * n_meas
    if target < 1:
        return kind
    freqs = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in shape], indexing="ij", sparse=True)  # broadcast: no full-size grids
    radius = np.sqrt(sum(f.astype(np.float32) ** 2 for f in freqs))
    free = np.zeros(shape, bool)
    half = island // 2
    offsets = np.stack(np.meshgrid(*[np.arange(-half, island - half)] * len(shape), indexing="ij"), -1)
    offsets = offsets.reshape(-1, len(shape))
    args = (measured.reshape(-1), radius.reshape(-1))
    dims = np.array(shape, np.int64)
    count = 0
    if kind.size > FREE_PERMUTE_MAX:        # draw candidates instead of permuting every pixel (below)
        for _ in range(20):
            order = _draw_candidates(args[0], args[1], centre_radius, target - count, island ** kind.ndim, rng)
            count += _mark_islands(free.reshape(-1), *args, order, offsets, dims, float(target - count),
                                   float(centre_radius))
            if count >= target:
                break
    if count < target:
        candidates = np.flatnonzero(measured & (radius > centre_radius))
        if candidates.size == 0:
            return kind
        order = rng.permutation(candidates)
        _mark_islands(free.reshape(-1), *args, order, offsets, dims, float(target - count), float(centre_radius))
    kind = kind.copy()
    kind[free] = alg.FREE
    return kind


#: `_free_islands` permutes every candidate pixel up to this many pixels (the free pixels of every
#: array up to 256^3 as before); larger arrays draw random candidates (a 512^3 permutation took 15 s)
FREE_PERMUTE_MAX = 1 << 25


def _draw_candidates(measured: np.ndarray, radius: np.ndarray, centre_radius: float, target: float,
                     island_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Random flat indices of measured pixels beyond `centre_radius` (uniform, drawn with replacement:
    a repeat adds no free pixel), about twice as many as islands of `island_pixels` (each with its
    mate) need to make `target` free pixels."""
    want = int(2 * target / max(1, 2 * island_pixels)) + 64
    out = np.empty(0, np.int64)
    for _ in range(50):
        idx = rng.integers(0, measured.size, size=4 * want, dtype=np.int64)
        idx = idx[measured[idx] & (radius[idx] > centre_radius)]
        out = np.concatenate([out, idx])
        if out.size >= want:
            break
    return out[:want]


def _np_mark_islands(free, measured, radius, order, offsets, shape, target, centre_radius):
    full = tuple(int(n) for n in shape)
    f, m, r = free.reshape(full), measured.reshape(full), radius.reshape(full)
    count = 0
    for flat in order:
        if count >= target:
            break
        c = np.array(np.unravel_index(flat, full))
        for sign in (1, -1):
            pts = tuple((((sign * c)[None, :] + offsets) % shape).T)
            ok = m[pts] & ~f[pts] & (r[pts] > centre_radius)
            f[tuple(p[ok] for p in pts)] = True
            count += int(np.count_nonzero(ok))
    return count


@kernels.kernel(_np_mark_islands, kernels.EXACT)
def _mark_islands(free, measured, radius, order, offsets, shape, target, centre_radius):  # pragma: no cover
    """Islands around the candidates in `order` (flat indices), each with its centro-symmetric mate,
    until `target` pixels are free: a pixel joins when measured, not yet free and beyond
    `centre_radius` (flat arrays of an array of `shape`; `offsets` (k, ndim) span one island)."""
    ndim = shape.size
    c = np.empty(ndim, np.int64)
    count = 0
    for flat in order:
        if count >= target:
            break
        rem = flat
        for ax in range(ndim - 1, -1, -1):
            c[ax] = rem % shape[ax]
            rem //= shape[ax]
        for sign in (1, -1):
            for k in range(offsets.shape[0]):
                idx = 0
                for ax in range(ndim):
                    v = (sign * c[ax] + offsets[k, ax]) % shape[ax]
                    idx = idx * shape[ax] + v
                if measured[idx] and not free[idx] and radius[idx] > centre_radius:
                    free[idx] = True
                    count += 1
    return count


def prepare(pattern: Pattern, options: Options, support: np.ndarray | None = None) -> Problem:
    """Check the data, move them to FFT order (once), choose the free pixels and the initial support.

    `support` (centred, bool) replaces the autocorrelation support. Raises DataError on data that
    cannot be phased (nothing measured, NaNs, a support larger than half the array, an oversampling
    below 2^(1/N)) and UsageError on a bad recipe."""
    src = pattern.source or "input"
    steps = parse_recipe(options.recipe)
    psf_spec = psf_start(options.psf)
    data = np.asarray(pattern.intensity, np.float32)
    if data.ndim not in (2, 3):
        raise DataError(f"{src}: a {data.ndim}-D array; phase retrieval needs a 2D pattern or a 3D volume")
    measured = pattern.measured
    if measured.shape != data.shape:
        raise DataError(f"{src}: mask shape {measured.shape} differs from the data {data.shape}")
    if not np.any(measured):
        raise DataError(f"{src}: every pixel is masked: nothing to phase")
    if not np.all(np.isfinite(data[measured])):
        raise DataError(f"{src}: measured pixels hold NaN or infinite values")
    if not np.any(data[measured] > 0):
        raise DataError(f"{src}: no measured pixel holds any photon: nothing to phase")
    info: dict[str, Any] = {"shape": list(data.shape), "warnings": []}
    if kernels.warning():  # numba missing or not compiling: the numpy kernels run (slower)
        info["warnings"].append(kernels.warning())
    unfriendly = [n for n in data.shape if fft.good_size(n) != n]
    if unfriendly:
        info["warnings"].append(f"array size {data.shape} is not FFT-friendly (2^a 3^b 5^c 7^d): slower FFTs")
    if options.check_oversampling:
        sigma = estimate_oversampling(data, measured)
        info["oversampling_estimate"] = sigma
        if sigma is not None and sigma < 2 ** (1.0 / data.ndim):
            raise DataError(f"{src}: linear oversampling about {sigma:.2f} (from the speckle correlation), below "
                            f"2^(1/{data.ndim}) = {2 ** (1.0 / data.ndim):.2f}: this pattern cannot be phased")
    seed = options.seed if options.seed is not None else int(np.random.SeedSequence().entropy % (2 ** 63))
    meas_f = np.fft.ifftshift(measured)
    data_f = np.fft.ifftshift(np.where(measured, np.maximum(data, 0), 0)).astype(np.float32)
    kind = np.where(meas_f, alg.MEASURED, alg.MASKED).astype(np.int8)
    if support is not None:
        support = np.asarray(support).astype(bool)
        if support.shape != data.shape:
            raise DataError(f"support shape {support.shape} differs from the data {data.shape}")
        support_f = np.fft.ifftshift(support)
        sup.support_size_check(support_f, "the given support")
        info["support_from"] = "file"
    else:
        halve = data.ndim == 3  # 3D: the object's extent, not 8 times its volume (support.py)
        support_f = sup.autocorrelation_support(data_f, meas_f, threshold=options.autocorrelation_threshold,
                                                sigma=options.autocorrelation_smooth, halve=halve)
        info["support_from"] = "autocorrelation/2" if halve else "autocorrelation"
    info["initial_support_size"] = int(np.count_nonzero(support_f))
    # central speckle: about (array size / object extent) pixels across; object extent from the
    # support (the autocorrelation spans twice the object)
    extents = []
    for ax in range(data.ndim):
        prof = np.any(support_f, axis=tuple(a for a in range(data.ndim) if a != ax))
        extents.append(max(1, int(np.count_nonzero(prof))) / (2.0 if info["support_from"] == "autocorrelation" else 1.0))
    centre_radius = max(3.0, 1.5 * max(n / e for n, e in zip(data.shape, extents)))
    info["object_extent_px"] = max(extents)
    info["support_smooth"] = list(pair_schedule(options.support_smooth)) if options.support_smooth is not None \
        else [round(max(1.0, max(extents) / 40.0), 2), 0.5]
    info["free_exclusion_radius_px"] = centre_radius
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2 ** 31 - 1]))
    if options.free_fraction > 0:
        kind = _free_islands(kind, centre_radius, options.free_fraction, options.free_island, rng)
    info["measured_pixels"] = int(np.count_nonzero(kind != alg.MASKED))
    info["free_pixels"] = int(np.count_nonzero(kind == alg.FREE))
    amp = np.sqrt(data_f).astype(np.float32)
    amp[kind == alg.MASKED] = 0
    info["noise_fraction"] = noise_fraction(amp, kind)  # a property of the data: once, not per run
    if options.recipe == DEFAULT_RECIPE and support is None and data.ndim == 2:
        steps = parse_recipe(default_recipe_for(info["initial_support_size"]))
        info["recipe_scaled"] = rcp.format_recipe(steps)
    elif options.recipe == DEFAULT_RECIPE and data.ndim == 3:
        steps = parse_recipe(DEFAULT_RECIPE_3D)
        info["recipe_3d"] = rcp.format_recipe(steps)
    if psf_spec is not None and options.psf.strip().lower() == "auto":
        why = auto_psf_veto(data.ndim, info["noise_fraction"])
        if why:
            psf_spec = None
            info["psf_auto"] = f"off: {why}"
    info["psf"] = None if psf_spec is None else str(psf_spec)
    if psf_spec is not None and not any(s.name == "psf" for s in rcp.flatten(steps)):
        if options.psf_from is None:
            info["psf_from_iteration"] = psf_switch_on(steps)
        else:
            info["psf_from_iteration"] = int(round(options.psf_from * count_iterations(steps)))
    return Problem(amp=amp, kind=kind, support=support_f, shape=tuple(data.shape), seed=seed, steps=steps,
                   n_iterations=count_iterations(steps), info=info)


@functools.lru_cache(maxsize=1)
def _sqrt_poisson_table() -> tuple[np.ndarray, np.ndarray]:
    """d(lam) = sqrt(lam) - E[sqrt(k)] for k ~ Poisson(lam), on a log grid of lam (1e-4 .. 1e6).

    The difference is tabulated (not E[sqrt(k)] itself) because it is small and smooth, so linear
    interpolation keeps its relative accuracy where sqrt(lam) is large."""
    lam = np.logspace(-4, 6, 401)
    mean = np.empty_like(lam)
    for j, m in enumerate(lam):
        if m > 400:  # large-mean expansion, exact to < 1e-9 there
            mean[j] = math.sqrt(m) * (1 - 1 / (8 * m) - 7 / (128 * m * m))
            continue
        k = np.arange(0, int(m + 12 * math.sqrt(m) + 30))
        logp = k * math.log(m) - m - np.array([math.lgamma(x + 1) for x in k])
        mean[j] = float(np.sum(np.sqrt(k) * np.exp(logp)))
    return lam, np.sqrt(lam) - mean


def _chunk_slices(n: int) -> list[slice]:
    """The data-level sums (`amplitude_misfit`, `noise_fraction`) chunk by chunk: no full-size float64."""
    return [slice(a, b) for a, b in kernels.chunk_bounds(n)]


def amplitude_misfit(transform: np.ndarray, amp: np.ndarray, kind: np.ndarray, scale: float) -> float:
    """Amplitude misfit over the constrained measured pixels beyond what photon noise explains.

    (sum (|F rho| - sqrt(k))^2 - sum E[(|F rho| - sqrt(k))^2]) / sum k, the expectation taken for
    k ~ Poisson(|F rho|^2): 2 lam - 2 sqrt(lam) E[sqrt(k)] = 2 sqrt(lam) d(lam). About 0 for a model that fits the data
    to the noise, at any dose; a few percent for a run stuck away from any solution. `transform` is
    the unscaled forward transform (times `scale` gives F rho)."""
    grid, diff = _sqrt_poisson_table()
    log_grid = np.log(grid)
    t = transform.reshape(-1)
    a_all, k_all = amp.reshape(-1), kind.reshape(-1)
    total = misfit = expected = 0.0
    for sl in _chunk_slices(t.size):                 # chunk by chunk: no full-size float64 temporaries (3D)
        measured = k_all[sl] == alg.MEASURED
        f = np.abs(t[sl][measured]).astype(np.float64) * scale
        a = a_all[sl][measured].astype(np.float64)
        total += float(np.sum(a * a))
        lam = f * f
        d = np.interp(np.log(np.maximum(lam, grid[0])), log_grid, diff)
        d = np.where(lam < grid[0], f - lam, d)  # E[sqrt k] ~ lam for a vanishing mean
        misfit += float(np.sum((f - a) ** 2))
        expected += float(np.sum(2 * f * d))
    if total <= 0:
        return math.nan
    return (misfit - expected) / total


def noise_fraction(amp: np.ndarray, kind: np.ndarray) -> float:
    """Share of the measured amplitudes' power that is photon noise: sum v(I) / sum I, v(I) = I/(1+4I)."""
    a_all, k_all = amp.reshape(-1), kind.reshape(-1)
    total = noise = 0.0
    for sl in _chunk_slices(a_all.size):
        a = a_all[sl][k_all[sl] == alg.MEASURED].astype(np.float64)
        i = a * a
        total += float(i.sum())
        noise += float(np.sum(i / (1 + 4 * i)))
    return noise / total if total > 0 else 0.0
