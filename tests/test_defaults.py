"""The phasing defaults that depend on the data: the default recipe's HIO length follows the object."""
from test_phasing import synthetic

from cxdi_cli.phasing import runs as phasing
from cxdi_cli.phasing.defaults import DEFAULT_RECIPE


def test_default_recipe_scales_with_the_initial_support():
    """600 HIO iterations up to the reference support (the 256^2 hard case: 5041 px), more above it
    (the 512^2 hard case, 18157 px, needs ~2400: 1/8 starts converged with 600, 8/8 with 2400), at most 4x."""
    assert phasing.default_recipe_for(2000) == DEFAULT_RECIPE
    assert phasing.default_recipe_for(phasing.HIO_REFERENCE_SUPPORT) == DEFAULT_RECIPE
    assert phasing.default_recipe_for(18157) == "hio**2180,er**200,ml**100"
    assert phasing.default_recipe_for(10 ** 7) == "hio**2400,er**200,ml**100"


def test_prepare_scales_only_the_default_recipe_of_a_large_2d_object():
    """A given recipe and a small object keep their iterations; a large 2D object's default HIO grows."""
    pattern, _ = synthetic(n=256, extent=0.5, noise=False)
    problem = phasing.prepare(pattern, phasing.Options(seed=1, check_oversampling=False))
    size = problem.info["initial_support_size"]
    assert size > phasing.HIO_REFERENCE_SUPPORT
    hio = [s for s in problem.steps if getattr(s, "name", None) == "hio"]
    assert problem.n_iterations > 900 and problem.info["recipe_scaled"] == phasing.default_recipe_for(size)
    assert hio and hio[0].count == problem.n_iterations - 300
    own = phasing.prepare(pattern, phasing.Options(seed=1, check_oversampling=False, recipe="hio**300,er**100"))
    assert own.n_iterations == 400 and "recipe_scaled" not in own.info
    small, _ = synthetic(n=64)
    assert phasing.prepare(small, phasing.Options(seed=1)).n_iterations == 900
