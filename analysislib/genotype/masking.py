"""Hold-out splits and masking scenarios for genotype imputation benchmarks.

Follows the papers' protocols:

* BiU-Net (Methods 5.2 "Data preprocessing"; 5.4 "Model training"): an 8:1:1
  train/validation/test split stratified by cohort (population), then test genotypes randomly
  masked at 5%, 15% and 25% with three independent replicates per level;
* Dias et al. (2022, "Validation and testing data"): genotyping-array scenarios (Affymetrix 6.0,
  UKB Axiom, Omni 1.5M) where every off-array variant is untyped
  (:func:`analysislib.simulate.genotypes.array_marker_set`);
* the real 1000 Genomes chr22 file (catalog ``1kg_chr22_array500``, the example input of
  ``TorkamaniLab/imputator_inference``): one SNP in three kept as typed.

A :class:`Scenario` names what is hidden; :func:`apply_scenario` turns the true target genotypes
into what an imputer receives (:class:`MaskedTarget.target`) and the entries it is scored on
(:class:`MaskedTarget.score_mask`, over the full site list, for
:func:`analysislib.genotype.metrics.score_imputation`). Everything is deterministic given seeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError
from analysislib.genotype.imputer import sites_key
from analysislib.simulate.genotypes import ARRAY_DENSITIES, array_marker_set

__all__ = [
    "BIUNET_MISSING_RATES",
    "BIUNET_SEEDS",
    "MaskedTarget",
    "Scenario",
    "apply_scenario",
    "array_scenario",
    "parse_scenario",
    "random_missing_scenario",
    "split_samples",
    "split_train_val_test",
    "standard_scenarios",
    "typed_fraction_scenario",
]

#: BiU-Net evaluation missingness levels and replicate seeds (three replicates per level).
BIUNET_MISSING_RATES: tuple[float, ...] = (0.05, 0.15, 0.25)
BIUNET_SEEDS: tuple[int, ...] = (1, 2, 3)

ScenarioKind = Literal["array", "random", "typed_fraction"]

# Per-call values that would leak hidden genotypes to the imputer.
_CALL_VALUES = ("call_dosage", "call_genotype_probability")


# ----------------------------------------------------------------------------- sample splits


def _split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Largest-remainder apportionment of ``n`` items to ``fractions`` (ties to earlier parts)."""
    quota = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(quota + 1e-9).astype(np.int64)
    remainder = quota - counts
    order = np.lexsort((np.arange(len(quota)), -np.round(remainder, 9)))
    counts[order[: max(0, n - int(counts.sum()))]] += 1
    return counts


def _split_indices(ds: xr.Dataset, fractions: Sequence[float], stratify_by: str | None,
                   seed: int) -> tuple[list[np.ndarray], str | None]:
    """Sample indices of each part (sorted), stratified by a sample variable when available."""
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise InvalidArgumentError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    n = ds.sizes["samples"]
    if stratify_by is not None and stratify_by not in ds:
        if stratify_by != "sample_population":
            raise InvalidArgumentError(f"cannot stratify by {stratify_by!r}: no such sample variable")
        stratify_by = None  # default variable absent (e.g. the real chr22 file): plain split
    if stratify_by is not None:
        if stratify_by in variables.SPECS:
            variables.validate(ds, stratify_by)
        labels = np.asarray(ds[stratify_by].values).astype(str)
    else:
        labels = np.zeros(n, dtype=str)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        shuffled = rng.permutation(members)
        bounds = np.cumsum(_split_counts(len(members), fractions))
        for k, chunk in enumerate(np.split(shuffled, bounds[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts], stratify_by


def _random_holdout(n_samples: int, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sample indices, sorted: the first ``n_held`` of a seeded permutation.

    The validation hold-out of the autoencoder's training
    (:func:`~analysislib.genotype.dae.plan.train_bundle`) and tuning
    (:func:`~analysislib.genotype.dae.tuning.trials.split_validation_samples`), each with its own
    seed and count. Not the rule of :func:`split_samples`, whose counts are largest-remainder
    apportionments per stratum and whose held-out part comes last in the permutation: the two
    give different splits of the same samples and seed.

    >>> _random_holdout(5, 2, seed=0)
    (array([0, 1, 3]), array([2, 4]))
    """
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def split_samples(
    ds: xr.Dataset,
    *,
    target_fraction: float = 0.1,
    stratify_by: str | None = "sample_population",
    seed: int = 0,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Hold out target samples: (reference panel, targets).

    Within each stratum the samples are shuffled and ``round(target_fraction × size)``
    (largest remainder) become targets, so populations keep their proportions (BiU-Net's
    stratified split). Sample order within each output follows ``ds``.

    Parameters
    ----------
    ds
        Genotype dataset.
    target_fraction
        Fraction of samples held out, in (0, 1).
    stratify_by
        Sample variable to stratify by, or None. The default ``"sample_population"`` falls
        back to an unstratified split when the dataset has no population labels; any other
        missing name is an error.
    seed
        Seed of the shuffle.

    Returns
    -------
    tuple of xarray.Dataset
        ``(reference, target)``; attributes ``split`` and ``split_seed`` record the split.
    """
    if not 0 < target_fraction < 1:
        raise InvalidArgumentError(f"target_fraction must be in (0, 1), got {target_fraction}")
    (ref_idx, tgt_idx), used = _split_indices(ds, (1 - target_fraction, target_fraction),
                                              stratify_by, seed)
    if len(tgt_idx) == 0 or len(ref_idx) == 0:
        raise InvalidArgumentError(f"target_fraction {target_fraction} of {ds.sizes['samples']} samples leaves "
                         "an empty reference or target set")
    return tuple(_tag(ds.isel(samples=idx), name, seed, used)  # type: ignore[return-value]
                 for idx, name in ((ref_idx, "reference"), (tgt_idx, "target")))


def split_train_val_test(
    ds: xr.Dataset,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    stratify_by: str | None = "sample_population",
    seed: int = 0,
) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """Train/validation/test split, 8:1:1 by default, stratified as :func:`split_samples`.

    BiU-Net: "an 8:1:1 train-validation-test split, stratified by cohort". Per stratum the
    counts are the largest-remainder apportionment of its size, so every stratum's parts sum to
    its size and totals stay within one sample per stratum of the fractions.
    """
    if len(fractions) != 3:
        raise InvalidArgumentError(f"fractions must be (train, validation, test), got {list(fractions)}")
    parts, used = _split_indices(ds, fractions, stratify_by, seed)
    return tuple(_tag(ds.isel(samples=idx), name, seed, used)  # type: ignore[return-value]
                 for idx, name in zip(parts, ("train", "validation", "test"), strict=True))


def _tag(ds: xr.Dataset, name: str, seed: int, stratified_by: str | None) -> xr.Dataset:
    ds.attrs = {**ds.attrs, "split": name, "split_seed": int(seed),
                "split_stratified_by": stratified_by or ""}
    return ds


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """What an imputation benchmark hides from the imputer.

    Attributes
    ----------
    name
        Results-store label (``array_affy6``, ``random_05_seed1``, ``typed_1in3``).
    kind
        ``"array"``: only array markers are typed; ``"random"``: a fraction of target genotype
        entries set missing; ``"typed_fraction"``: every ``keep_every``-th variant typed.
    density
        Array name from :data:`~analysislib.simulate.genotypes.ARRAY_DENSITIES` or a fraction.
    min_maf, population
        Array marker choice (see :func:`~analysislib.simulate.genotypes.array_marker_set`).
    rate, seed
        Missingness rate and replicate seed of a random scenario.
    keep_every, offset
        Typed-fraction scenario: variants ``offset, offset + keep_every, ...`` are typed.
    """

    name: str
    kind: ScenarioKind
    density: str | float | None = None
    min_maf: float = 0.05
    population: str | None = None
    rate: float | None = None
    seed: int | None = None
    keep_every: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.kind == "array":
            if self.density is None:
                raise InvalidArgumentError(f"scenario {self.name!r}: an array scenario needs a density")
            if isinstance(self.density, str) and self.density not in ARRAY_DENSITIES:
                raise InvalidArgumentError(f"scenario {self.name!r}: unknown array {self.density!r}; choose "
                                 f"from {sorted(ARRAY_DENSITIES)} or a fraction")
            if not isinstance(self.density, str) and not 0 < float(self.density) <= 1:
                raise InvalidArgumentError(f"scenario {self.name!r}: array density must be in (0, 1]")
        elif self.kind == "random":
            if self.rate is None or not 0 < self.rate < 1 or self.seed is None:
                raise InvalidArgumentError(f"scenario {self.name!r}: a random scenario needs 0 < rate < 1 and a seed")
        elif self.kind == "typed_fraction":
            if self.keep_every is None or self.keep_every < 2 or not 0 <= self.offset < self.keep_every:
                raise InvalidArgumentError(f"scenario {self.name!r}: keep_every must be >= 2 and "
                                 "0 <= offset < keep_every")
        else:
            raise InvalidArgumentError(f"unknown scenario kind {self.kind!r}; use 'array', 'random' or 'typed_fraction'")


def array_scenario(density: str | float = "affy6", *, min_maf: float = 0.05,
                   population: str | None = None) -> Scenario:
    """Genotyping-array scenario: array markers typed, everything off-array untyped.

    Named ``array_<density>`` (``array_affy6``, ``array_ukb_axiom``, ``array_omni15``, or
    ``array_0.05`` for a fraction).
    """
    label = density if isinstance(density, str) else f"{float(density):g}"
    return Scenario(f"array_{label}", "array", density=density, min_maf=min_maf, population=population)


def random_missing_scenario(rate: float, seed: int = 1) -> Scenario:
    """Random missingness (BiU-Net): ``rate`` of target genotype entries set missing.

    Named ``random_<percent>_seed<seed>``: ``random_05_seed1`` for 5% with seed 1.
    """
    percent = rate * 100
    label = f"{round(percent):02d}" if np.isclose(percent, round(percent)) else f"{percent:g}"
    return Scenario(f"random_{label}_seed{int(seed)}", "random", rate=float(rate), seed=int(seed))


def typed_fraction_scenario(keep_every: int = 3, *, offset: int = 0) -> Scenario:
    """Keep one SNP in ``keep_every`` as typed (used on the real chr22 file); ``typed_1in3``."""
    suffix = f"_offset{offset}" if offset else ""
    return Scenario(f"typed_1in{keep_every}{suffix}", "typed_fraction", keep_every=int(keep_every),
                    offset=int(offset))


def parse_scenario(name: str) -> Scenario:
    """The scenario a name stands for (inverse of the constructors' names)."""
    if match := re.fullmatch(r"random_([0-9.]+)_seed(\d+)", name):
        return random_missing_scenario(float(match[1]) / 100, int(match[2]))
    if match := re.fullmatch(r"typed_1in(\d+)(?:_offset(\d+))?", name):
        return typed_fraction_scenario(int(match[1]), offset=int(match[2] or 0))
    if match := re.fullmatch(r"array_(.+)", name):
        density = match[1]
        return array_scenario(density if density in ARRAY_DENSITIES else float(density))
    raise InvalidArgumentError(f"unknown scenario {name!r}: use array_<density>, typed_1in<k> or "
                     "random_<pct>_seed<s> (for example array_omni15, typed_1in3, random_05_seed1)")


def standard_scenarios(
    rates: Sequence[float] = BIUNET_MISSING_RATES,
    seeds: Sequence[int] = BIUNET_SEEDS,
    arrays: Sequence[str | float] = tuple(ARRAY_DENSITIES),
) -> list[Scenario]:
    """BiU-Net's random-missingness set (5/15/25% × 3 seeds), then the three array densities."""
    return ([random_missing_scenario(r, s) for r in rates for s in seeds]
            + [array_scenario(a) for a in arrays])


@dataclass(eq=False)
class MaskedTarget:
    """What an imputer receives and what it is scored on.

    Attributes
    ----------
    target
        Dataset given to the imputer: typed sites only (array and typed-fraction scenarios) or
        every site with -1 at masked entries (random scenario). Per-call dosages and
        probabilities of the truth are dropped.
    score_mask
        Bool (variants, samples) over the FULL site list of the truth: True where the entry is
        hidden and called in the truth, i.e. must be scored.
    scenario
        The scenario applied.
    typed_sites
        Bool (variants,) over the full site list: sites present in ``target`` (all True for
        random missingness).
    """

    target: xr.Dataset
    score_mask: np.ndarray
    scenario: Scenario
    typed_sites: np.ndarray = field(repr=False)


def _without_call_values(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([v for v in _CALL_VALUES if v in ds])


def apply_scenario(truth_target: xr.Dataset, scenario: Scenario,
                   reference: xr.Dataset | None = None) -> MaskedTarget:
    """Hide genotypes of the held-out targets as the scenario says.

    Parameters
    ----------
    truth_target
        True genotypes of the target samples over the full site list.
    scenario
        From :func:`array_scenario`, :func:`random_missing_scenario`,
        :func:`typed_fraction_scenario` or :func:`parse_scenario`.
    reference
        Reference panel over the same sites. Array markers are chosen from its MAF (arrays are
        designed on external panels); without it, from the targets' MAF. Not used otherwise.

    Returns
    -------
    MaskedTarget
        Random missingness masks ``round(rate × called entries)`` entries drawn uniformly
        without replacement (both haplotypes of a call); for one seed the masks are nested
        across rates (5% ⊂ 15% ⊂ 25%), as they are prefixes of one random permutation. Entries
        already missing in the truth are neither masked nor scored.
    """
    variables.validate(truth_target, ["call_genotype", "variant_position"])
    gt = np.asarray(truth_target["call_genotype"].values)
    called = (gt >= 0).all(axis=-1)
    n_var = gt.shape[0]
    if scenario.kind == "random":
        assert scenario.rate is not None and scenario.seed is not None
        flat = np.flatnonzero(called.ravel())
        n_mask = round(scenario.rate * len(flat))
        order = np.random.default_rng(scenario.seed).permutation(len(flat))
        score_mask = np.zeros(called.size, dtype=bool)
        score_mask[flat[order[:n_mask]]] = True
        score_mask = score_mask.reshape(called.shape)
        masked_gt = np.where(score_mask[..., None], np.int8(-1), gt).astype(gt.dtype)
        target = _without_call_values(truth_target).copy()
        target["call_genotype"] = (truth_target["call_genotype"].dims, masked_gt,
                                   truth_target["call_genotype"].attrs)
        if "call_genotype_phased" in truth_target:
            phased = np.asarray(truth_target["call_genotype_phased"].values) & ~score_mask
            target["call_genotype_phased"] = (("variants", "samples"), phased)
        target.attrs = {**target.attrs, "scenario": scenario.name, "masked_entries": int(n_mask)}
        return MaskedTarget(target, score_mask, scenario, np.ones(n_var, dtype=bool))

    if scenario.kind == "array":
        source = truth_target
        if reference is not None:
            if not np.array_equal(sites_key(reference), sites_key(truth_target)):
                raise InvalidArgumentError("reference and truth_target must hold the same sites in the same "
                                 "order to choose array markers from the reference")
            source = reference
        typed = array_marker_set(source, scenario.density,  # type: ignore[arg-type]
                                 min_maf=scenario.min_maf, population=scenario.population)
    else:
        assert scenario.keep_every is not None
        typed = np.arange(n_var) % scenario.keep_every == scenario.offset
    target = _without_call_values(truth_target).isel(variants=np.flatnonzero(typed))
    target.attrs = {**target.attrs, "scenario": scenario.name, "typed_variants": int(typed.sum())}
    score_mask = ~typed[:, None] & called
    return MaskedTarget(target, score_mask, scenario, typed)
