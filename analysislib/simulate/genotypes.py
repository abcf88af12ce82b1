"""Coalescent genotype simulation, array-like marker sets and offspring formation.

This module builds the synthetic stand-in for the reference panels of Dias et al. (2022, eLife
11:e75600, "Training data, masking, and data augmentation"):

* :func:`simulate_genotypes` runs msprime (Baumdicker et al. 2022) under the stdpopsim
  (Adrion et al. 2020) HomSap ``OutOfAfrica_3G09`` model (Gutenkunst et al. 2009; YRI, CEU and
  CHB) with the model's own mutation rate, on a chromosome-22-like region whose recombination map
  has a flat background plus short hotspots (Myers et al. 2005). Sites carrying more than one
  mutation are dropped so every variant is a biallelic SNP, as Dias et al. removed multi-allelic
  SNPs with bcftools. The rate map and hotspot table are kept as truth.
* :func:`array_marker_set` picks genotyping-array-like marker sets at the densities of
  Affymetrix 6.0, UKB Axiom and Omni 1.5M relative to sequenced sites on chromosome 22 in Dias
  et al. ("Validation and testing data"); :func:`subset_to_array` and :func:`mask_to_array`
  turn them into imputation inputs.
* :func:`form_offspring` simulates meiosis along the genetic map to create children of panel
  members, the offspring-formation augmentation Dias et al. ran with sim1000G
  (Dimitromanolakis et al. 2019) during fine-tuning.

Nothing here downloads data: the demographic model is code in stdpopsim and the recombination map
is generated from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from analysislib import variables
from analysislib.errors import InvalidArgumentError
from analysislib.genotype.dataset import create_genotype_dataset
from analysislib.genotype.stats import minor_allele_frequency
from analysislib.presets import Presets

if TYPE_CHECKING:
    import msprime
    import tskit

__all__ = [
    "ARRAY_DENSITIES",
    "CHR22_LENGTH",
    "GENOTYPE_PRESETS",
    "GenotypePreset",
    "SimulatedPanel",
    "array_marker_set",
    "augment_with_offspring",
    "form_offspring",
    "genetic_position_cm",
    "hotspot_rate_map",
    "mask_to_array",
    "simulate_genotypes",
    "subset_to_array",
]

#: Length of human chromosome 22 in GRCh37 (bp); simulated regions must fit inside it.
CHR22_LENGTH = 51_304_566

#: Array markers as a fraction of sequenced chromosome-22 SNPs. Dias et al. (2022), "Validation
#: and testing data": in the ARIC validation cohort, 9,025 (Affymetrix 6.0), 10,615 (UKB Axiom)
#: and 14,453 (Omni 1.5M) of 306,812 SNPs remained after array-like masking.
ARRAY_DENSITIES: dict[str, float] = {
    "affy6": 9_025 / 306_812,
    "ukb_axiom": 10_615 / 306_812,
    "omni15": 14_453 / 306_812,
}

_DEMOGRAPHIC_MODEL = ("HomSap", "OutOfAfrica_3G09")


@dataclass(frozen=True)
class GenotypePreset:
    """Parameters of one genotype simulation.

    Attributes
    ----------
    samples_per_population
        Diploid individuals sampled from each population.
    sequence_length
        Length of the simulated region in bp.
    region_start
        0-based chromosome-22 coordinate where the region begins (20 Mb lies in the gene-rich
        q arm, clear of the acrocentric p arm).
    populations
        Populations of ``OutOfAfrica_3G09`` to sample, in output order.
    background_rate
        Recombination rate outside hotspots, per bp per generation.
    hotspot_spacing
        Range (bp) of the uniform gap between consecutive hotspots.
    hotspot_width
        Range (bp) of the uniform hotspot width.
    hotspot_intensity
        Range of the hotspot rate as a multiple of ``background_rate``, drawn log-uniformly
        (hotspot strengths are heavy-tailed, Myers et al. 2005).
    variant_chunks
        ``None`` for in-memory NumPy genotypes, or the number of variants per dask chunk
        (genotypes are then decoded from the tree sequence lazily, chunk by chunk).
    """

    samples_per_population: int
    sequence_length: int
    region_start: int = 20_000_000
    populations: tuple[str, ...] = ("YRI", "CEU", "CHB")
    background_rate: float = 1e-8
    hotspot_spacing: tuple[int, int] = (50_000, 100_000)
    hotspot_width: tuple[int, int] = (1_000, 2_000)
    hotspot_intensity: tuple[float, float] = (10.0, 100.0)
    variant_chunks: int | None = None


#: ``quick`` (3 x 100 diploids, 2 Mb, about 19,000 SNPs) simulates in about a second on 2 CPU
#: cores; ``full`` (3 x 1000 diploids, 20 Mb, about 400,000 SNPs, dask-backed) in about half a
#: minute.
GENOTYPE_PRESETS: Presets[GenotypePreset] = Presets("genotype simulation", {
    "quick": GenotypePreset(samples_per_population=100, sequence_length=2_000_000),
    "full": GenotypePreset(
        samples_per_population=1000, sequence_length=20_000_000, variant_chunks=10_000),
})


@dataclass
class SimulatedPanel:
    """A simulated phased panel with its recombination truth.

    Attributes
    ----------
    ds
        Genotype dataset (contig ``"22"``, phased, with ``sample_population`` and
        ``variant_genetic_position`` in cM). ``variant_position`` is 1-based: the tskit site at
        0-based coordinate ``x`` is reported at ``x + 1``.
    rate_map
        ``msprime.RateMap`` in 0-based chromosome coordinates (rate per bp per generation, NaN
        before ``region_start``).
    hotspots
        One row per hotspot: ``start``, ``end`` (0-based, half-open, the rate-map coordinates),
        ``intensity`` (multiple of the background rate) and ``rate``.
    tree_sequence
        The simulated ``tskit.TreeSequence`` after removing multi-mutation sites.
    n_removed_sites
        Sites dropped because they carried more than one mutation.
    preset
        The parameters used (preset with overrides applied).
    """

    ds: xr.Dataset
    rate_map: msprime.RateMap
    hotspots: pd.DataFrame
    tree_sequence: tskit.TreeSequence
    n_removed_sites: int
    preset: GenotypePreset = field(repr=False)

    def genetic_position_cm(self, position: Any) -> np.ndarray:
        """Genetic map position in cM of 1-based ``position`` values (0 at the region start)."""
        return genetic_position_cm(self.rate_map, position)


def genetic_position_cm(rate_map: msprime.RateMap, position: Any) -> np.ndarray:
    """Cumulative map length in cM at 1-based positions, using the 0-based ``rate_map``."""
    pos = np.asarray(position, dtype=np.float64) - 1.0
    return 100.0 * np.asarray(rate_map.get_cumulative_mass(pos), dtype=np.float64)


def _child_seeds(seed: int, n: int) -> list[int]:
    """Independent 32-bit seeds (msprime needs 1..2**32-1) derived from one seed."""
    states = [s.generate_state(1, dtype=np.uint32)[0] for s in np.random.SeedSequence(seed).spawn(n)]
    return [int(s) % (2**32 - 2) + 1 for s in states]


def hotspot_rate_map(
    region_start: int,
    sequence_length: int,
    *,
    background_rate: float = 1e-8,
    spacing: tuple[int, int] = (50_000, 100_000),
    width: tuple[int, int] = (1_000, 2_000),
    intensity: tuple[float, float] = (10.0, 100.0),
    seed: int | np.random.Generator = 0,
) -> tuple[msprime.RateMap, pd.DataFrame]:
    """A recombination map with a flat background and short hotspots.

    Hotspots are laid out left to right: the first begins a uniform distance in
    ``[0, spacing[1])`` from ``region_start``, each next one a uniform ``spacing`` gap after the
    previous end. Widths are uniform in ``width`` and rates are ``background_rate`` times an
    intensity drawn log-uniformly from ``intensity``. With the defaults (about one 1.5 kb hotspot
    per 75 kb at 10-100x) half the map length sits in about 2% of the sequence, close to the
    concentration in human fine-scale maps (Myers et al. 2005, Science 310:321) and a mean rate
    near chromosome 22's 2.1e-8 per bp.

    Parameters
    ----------
    region_start, sequence_length
        The region is ``[region_start, region_start + sequence_length)`` in 0-based coordinates.
    background_rate
        Rate outside hotspots, per bp per generation.
    spacing, width, intensity
        Ranges described above.
    seed
        Seed or generator for the hotspot layout.

    Returns
    -------
    rate_map : msprime.RateMap
        Over ``[0, region_start + sequence_length)``; NaN (unknown) before ``region_start``
        when it is positive.
    hotspots : pandas.DataFrame
        ``start``, ``end`` (0-based half-open), ``intensity``, ``rate``.
    """
    import msprime

    if sequence_length <= 0 or region_start < 0:
        raise InvalidArgumentError(f"invalid region: start {region_start}, length {sequence_length}")
    if not (0 < spacing[0] <= spacing[1] and 0 < width[0] <= width[1]):
        raise InvalidArgumentError(f"hotspot spacing {spacing} and width {width} must be positive ranges")
    if not 0 < intensity[0] <= intensity[1]:
        raise InvalidArgumentError(f"hotspot intensity range {intensity} must be positive")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    end = region_start + sequence_length
    rows = []
    cursor = region_start + int(rng.integers(0, spacing[1]))
    while True:
        w = int(rng.integers(width[0], width[1] + 1))
        if cursor + w >= end:
            break
        fold = float(np.exp(rng.uniform(np.log(intensity[0]), np.log(intensity[1]))))
        rows.append((cursor, cursor + w, fold, fold * background_rate))
        cursor += w + int(rng.integers(spacing[0], spacing[1] + 1))
    hotspots = pd.DataFrame(rows, columns=["start", "end", "intensity", "rate"]).astype(
        {"start": np.int64, "end": np.int64, "intensity": np.float64, "rate": np.float64})
    breaks, rates = [0.0], []
    if region_start > 0:
        breaks.append(float(region_start))
        rates.append(math.nan)
    for start, stop, _, rate in rows:
        if start > breaks[-1]:
            breaks.append(float(start))
            rates.append(background_rate)
        breaks.append(float(stop))
        rates.append(rate)
    if end > breaks[-1]:
        breaks.append(float(end))
        rates.append(background_rate)
    return msprime.RateMap(position=breaks, rate=rates), hotspots


def _resolve_preset(preset: str | GenotypePreset, overrides: dict[str, Any]) -> GenotypePreset:
    params = GENOTYPE_PRESETS.resolve(preset, **overrides)
    if params.samples_per_population < 1:
        raise InvalidArgumentError("samples_per_population must be at least 1")
    if params.region_start + params.sequence_length > CHR22_LENGTH:
        raise InvalidArgumentError(
            f"region {params.region_start}+{params.sequence_length} runs past the end of "
            f"chromosome 22 ({CHR22_LENGTH} bp)")
    return params


def _decode_block(ts: tskit.TreeSequence, lo: int, hi: int, n_samples: int) -> np.ndarray:
    """Genotypes of sites ``lo:hi`` as int8 ``(variants, samples, 2)``."""
    out = np.empty((hi - lo, 2 * n_samples), dtype=np.int8)
    if hi > lo:
        positions = ts.sites_position
        left = positions[lo]
        right = positions[hi - 1] + 1 if hi < ts.num_sites else ts.sequence_length
        for i, variant in enumerate(ts.variants(left=left, right=right, copy=False)):
            out[i] = variant.genotypes
        if i != hi - lo - 1:  # pragma: no cover - guards the site window arithmetic
            raise RuntimeError(f"decoded {i + 1} sites, expected {hi - lo}")
    return out.reshape(hi - lo, n_samples, 2)


def _genotype_array(ts: tskit.TreeSequence, n_samples: int, chunks: int | None) -> Any:
    if chunks is None:
        return _decode_block(ts, 0, ts.num_sites, n_samples)
    import dask
    import dask.array as da

    blocks = []
    for lo in range(0, ts.num_sites, chunks):
        hi = min(lo + chunks, ts.num_sites)
        delayed = dask.delayed(_decode_block)(ts, lo, hi, n_samples)
        blocks.append(da.from_delayed(delayed, shape=(hi - lo, n_samples, 2), dtype=np.int8))
    if not blocks:
        return da.zeros((0, n_samples, 2), dtype=np.int8)
    return da.concatenate(blocks, axis=0)


def simulate_genotypes(
    preset: str | GenotypePreset = "quick", *, seed: int = 0, **overrides: Any
) -> SimulatedPanel:
    """Simulate a phased YRI/CEU/CHB panel on a chromosome-22-like region with hotspots.

    Ancestry is simulated with ``msprime.sim_ancestry`` under stdpopsim's HomSap
    ``OutOfAfrica_3G09`` demography (Gutenkunst et al. 2009, PLoS Genet 5:e1000695) and the
    recombination map of :func:`hotspot_rate_map`; mutations with ``msprime.sim_mutations`` at
    the model's own rate (2.35e-8 per bp per generation, the rate the model was fitted with, as
    stdpopsim warns; the species default 1.29e-8 gives about half the real SNP density) under
    msprime's default JC69 nucleotide model. Sites
    with more than one mutation (recurrent or back mutations, which can be multi-allelic) are
    removed, leaving biallelic SNPs with REF = ancestral and ALT = derived allele.

    Parameters
    ----------
    preset
        A key of :data:`GENOTYPE_PRESETS` (``"quick"``, ``"full"``) or a :class:`GenotypePreset`.
    seed
        Seeds the hotspot layout, ancestry and mutations (independent streams); the same seed
        and parameters give the same panel.
    **overrides
        Any :class:`GenotypePreset` field, for example ``samples_per_population=20``.

    Returns
    -------
    SimulatedPanel
        Dataset with samples ``YRI_0001``... in population order, contig ``"22"`` and the
        variable ``variant_genetic_position`` (cM from the region start); plus the rate map,
        hotspot table and tree sequence.
    """
    import msprime
    import stdpopsim
    import tskit

    params = _resolve_preset(preset, overrides)
    hotspot_seed, ancestry_seed, mutation_seed = _child_seeds(seed, 3)
    start, end = params.region_start, params.region_start + params.sequence_length
    rate_map, hotspots = hotspot_rate_map(
        start, params.sequence_length, background_rate=params.background_rate,
        spacing=params.hotspot_spacing, width=params.hotspot_width,
        intensity=params.hotspot_intensity, seed=hotspot_seed)

    model = stdpopsim.get_species(_DEMOGRAPHIC_MODEL[0]).get_demographic_model(
        _DEMOGRAPHIC_MODEL[1])
    known = [p.name for p in model.populations]
    missing = [p for p in params.populations if p not in known]
    if missing:
        raise InvalidArgumentError(f"populations {missing} are not in {_DEMOGRAPHIC_MODEL[1]} ({known})")
    ts = msprime.sim_ancestry(
        samples={p: params.samples_per_population for p in params.populations},
        demography=model.model, recombination_rate=rate_map, sequence_length=end,
        ploidy=2, random_seed=ancestry_seed)
    mutation_map = msprime.RateMap(position=[0, start, end], rate=[0.0, model.mutation_rate])
    ts = msprime.sim_mutations(ts, rate=mutation_map, random_seed=mutation_seed)

    mutations_per_site = np.bincount(ts.tables.mutations.site, minlength=ts.num_sites)
    multi = np.flatnonzero(mutations_per_site != 1)
    ts = ts.delete_sites(multi)

    n_ind = ts.num_individuals
    node_pop = ts.tables.nodes.population
    ind_nodes = np.array([ts.individual(i).nodes for i in range(n_ind)])
    if not np.array_equal(ind_nodes.ravel(), ts.samples()):
        raise RuntimeError("msprime individuals are not in sample-node order")  # pragma: no cover
    pop_names = [ts.population(p).metadata["name"] for p in range(ts.num_populations)]
    sample_population = [pop_names[node_pop[nodes[0]]] for nodes in ind_nodes]
    counters: dict[str, int] = {}
    sample_id = []
    for pop in sample_population:
        counters[pop] = counters.get(pop, 0) + 1
        sample_id.append(f"{pop}_{counters[pop]:04d}")

    tables = ts.tables
    position = tables.sites.position.astype(np.int64) + 1
    # One mutation per site, and tskit sorts mutations by site: row i belongs to site i.
    ref = np.array(tskit.unpack_strings(
        tables.sites.ancestral_state, tables.sites.ancestral_state_offset), dtype=object)
    alt = np.array(tskit.unpack_strings(
        tables.mutations.derived_state, tables.mutations.derived_state_offset), dtype=object)
    alleles = np.stack([ref, alt], axis=1) if ts.num_sites else np.empty((0, 2), dtype=object)
    genotypes = _genotype_array(ts, n_ind, params.variant_chunks)
    phased = np.ones((ts.num_sites, n_ind), dtype=bool)
    if params.variant_chunks is not None:
        import dask.array as da

        phased = da.from_array(phased, chunks=(params.variant_chunks, -1))
    ds = create_genotype_dataset(
        contigs=["22"],
        variant_contig=np.zeros(ts.num_sites, dtype=np.int16),
        variant_position=position,
        variant_allele=alleles,
        variant_id=np.array([f"22:{p}" for p in position], dtype=object),
        sample_id=sample_id,
        sample_population=sample_population,
        call_genotype=genotypes,
        call_genotype_phased=phased,
        attrs={
            "source": "analysislib.simulate.genotypes.simulate_genotypes",
            "demographic_model": "/".join(_DEMOGRAPHIC_MODEL),
            "mutation_rate": float(model.mutation_rate),
            "generation_time": float(model.generation_time),
            "seed": int(seed),
            "region": f"22:{start + 1}-{end}",
            "mean_recombination_rate": float(rate_map.mean_rate),
            "n_hotspots": len(hotspots),
            "n_multiple_mutation_sites_removed": len(multi),
        },
    )
    ds["variant_genetic_position"] = ("variants", genetic_position_cm(rate_map, position))
    ds["variant_genetic_position"].attrs["units"] = "cM"
    variables.validate(ds, "variant_genetic_position")
    return SimulatedPanel(ds=ds, rate_map=rate_map, hotspots=hotspots, tree_sequence=ts,
                          n_removed_sites=len(multi), preset=params)


# --------------------------------------------------------------------------- array marker sets


def _density_fraction(density: str | float) -> float:
    if isinstance(density, str):
        if density not in ARRAY_DENSITIES:
            raise InvalidArgumentError(f"unknown array {density!r}; choose from {sorted(ARRAY_DENSITIES)} "
                             "or pass a fraction")
        return ARRAY_DENSITIES[density]
    fraction = float(density)
    if not 0 < fraction <= 1:
        raise InvalidArgumentError(f"array density must be a fraction in (0, 1], got {density}")
    return fraction


def _spread_evenly(candidate_pos: np.ndarray, n_target: int) -> np.ndarray:
    """Indices into sorted ``candidate_pos`` of ``n_target`` sites spread evenly by position.

    Each of ``n_target`` equally spaced grid points takes its nearest candidate. Where several
    grid points share a candidate, the widest stretches between chosen sites (the region ends
    included) receive the free candidate nearest their midpoint until ``n_target`` distinct
    sites are chosen. Consecutive chosen sites are therefore at most ``span / n_target`` plus the
    widest gap between candidates apart.
    """
    n = len(candidate_pos)
    lo, hi = float(candidate_pos[0]), float(candidate_pos[-1])
    step = (hi - lo) / n_target
    grid = lo + step * (np.arange(n_target) + 0.5)
    chosen = np.unique(_nearest(candidate_pos, grid))
    while len(chosen) < n_target:
        bounds = np.concatenate([[-1], chosen, [n]])
        first_free, last_free = bounds[:-1] + 1, bounds[1:] - 1
        left = candidate_pos[np.maximum(bounds[:-1], 0)]
        right = candidate_pos[np.minimum(bounds[1:], n - 1)]
        has_free = last_free >= first_free
        order = np.argsort(-(right - left), kind="stable")
        order = order[has_free[order]][: n_target - len(chosen)]
        mid = (left[order] + right[order]) / 2
        upper = np.clip(np.searchsorted(candidate_pos, mid), first_free[order], last_free[order])
        lower = np.clip(upper - 1, first_free[order], last_free[order])
        picks = np.where(mid - candidate_pos[lower] <= candidate_pos[upper] - mid, lower, upper)
        chosen = np.union1d(chosen, picks)
    return chosen


def _nearest(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if len(sorted_values) == 1:
        return np.zeros(len(queries), dtype=np.int64)
    right = np.clip(np.searchsorted(sorted_values, queries), 1, len(sorted_values) - 1)
    left = right - 1
    closer_left = (queries - sorted_values[left]) <= (sorted_values[right] - queries)
    return np.where(closer_left, left, right)


def array_marker_set(
    ds: xr.Dataset,
    density: str | float = "affy6",
    *,
    min_maf: float = 0.05,
    population: str | None = None,
) -> np.ndarray:
    """Choose genotyping-array-like markers: common SNPs spread evenly along the region.

    The number of markers is ``round(fraction * n_variants)`` where the fraction is one of
    :data:`ARRAY_DENSITIES` (Dias et al. 2022: Affymetrix 6.0 2.9%, UKB Axiom 3.5%, Omni 1.5M
    4.7% of sequenced chromosome-22 SNPs) or a number. Candidates are variants with minor allele
    frequency at least ``min_maf`` (arrays are designed around common tag SNPs; the default
    keeps MAF >= 5%). Markers are placed on an even physical grid, each grid
    point taking the nearest candidate.

    Parameters
    ----------
    ds
        Genotype dataset (NumPy or dask backed), variants sorted by position.
    density
        ``"affy6"``, ``"ukb_axiom"``, ``"omni15"`` or a fraction in (0, 1].
    min_maf
        Minimum minor allele frequency of a candidate marker.
    population
        Compute MAF in this ``sample_population`` only (for example the array's design
        population); default all samples.

    Returns
    -------
    numpy.ndarray
        Boolean mask over variants, True at array markers.

    Raises
    ------
    ValueError
        If fewer common variants than markers are available.
    """
    variables.validate(ds, ["call_genotype", "variant_position"])
    fraction = _density_fraction(density)
    subset = ds
    if population is not None:
        variables.validate(ds, "sample_population")
        keep = np.asarray(ds["sample_population"].values) == population
        if not keep.any():
            raise InvalidArgumentError(f"no samples of population {population!r} in the dataset")
        subset = ds.isel(samples=np.flatnonzero(keep))
    maf = np.nan_to_num(minor_allele_frequency(subset).values, nan=0.0)
    position = np.asarray(ds["variant_position"].values, dtype=np.int64)
    if np.any(np.diff(position) < 0):
        raise InvalidArgumentError("variants must be sorted by position to choose array markers")
    n_target = round(fraction * ds.sizes["variants"])
    candidates = np.flatnonzero(maf >= min_maf)
    if n_target > len(candidates):
        raise InvalidArgumentError(
            f"{n_target} array markers requested ({fraction:.2%} of {ds.sizes['variants']} "
            f"variants) but only {len(candidates)} variants have MAF >= {min_maf}")
    mask = np.zeros(ds.sizes["variants"], dtype=bool)
    if n_target > 0:
        mask[candidates[_spread_evenly(position[candidates].astype(np.float64), n_target)]] = True
    return mask


def _marker_mask(ds: xr.Dataset, markers: Any) -> np.ndarray:
    markers = np.asarray(markers)
    n = ds.sizes["variants"]
    if markers.dtype == bool:
        if markers.shape != (n,):
            raise InvalidArgumentError(f"marker mask has shape {markers.shape}; dataset has {n} variants")
        return markers
    mask = np.zeros(n, dtype=bool)
    if markers.size and (markers.min() < 0 or markers.max() >= n):
        raise InvalidArgumentError(f"marker indices must lie in [0, {n})")
    mask[markers.astype(np.int64)] = True
    return mask


def subset_to_array(ds: xr.Dataset, markers: Any) -> xr.Dataset:
    """Keep only array markers: the typed input of HMM imputers (Beagle, Minimac4).

    This is how Dias et al. made mock arrays from sequenced cohorts (``bcftools view -R``).

    Parameters
    ----------
    ds
        Genotype dataset.
    markers
        Boolean mask over variants or integer variant indices (from :func:`array_marker_set`).
    """
    mask = _marker_mask(ds, markers)
    return ds.isel(variants=np.flatnonzero(mask))


def mask_to_array(ds: xr.Dataset, markers: Any) -> xr.Dataset:
    """Keep every variant but set genotypes at non-array sites to missing (-1).

    The full-width input of the autoencoders: untyped positions are absent, encoded as the null
    allele-presence pair [0, 0] (Dias et al. 2022, Equation 1). ``call_dosage`` and
    ``call_genotype_probability``, if present, become NaN at non-array sites.

    Parameters
    ----------
    ds
        Genotype dataset.
    markers
        Boolean mask over variants or integer variant indices.
    """
    mask = _marker_mask(ds, markers)
    keep = xr.DataArray(mask, dims="variants")
    out = ds.copy()
    out["call_genotype"] = ds["call_genotype"].where(keep, -1).astype(ds["call_genotype"].dtype)
    out["call_genotype"].attrs = dict(ds["call_genotype"].attrs)
    for name in ("call_dosage", "call_genotype_probability"):
        if name in ds:
            out[name] = ds[name].where(keep)
    out.attrs["array_markers"] = int(mask.sum())
    return out


# --------------------------------------------------------------------------- offspring formation


def _variant_morgans(ds: xr.Dataset, genetic_map: Any) -> np.ndarray:
    """Genetic position of every variant in Morgans."""
    if genetic_map is None:
        if "variant_genetic_position" not in ds:
            raise InvalidArgumentError("pass genetic_map: the dataset has no variant_genetic_position")
        cm = np.asarray(ds["variant_genetic_position"].values, dtype=np.float64)
    elif hasattr(genetic_map, "get_cumulative_mass"):
        cm = genetic_position_cm(genetic_map, ds["variant_position"].values)
    else:
        cm = np.asarray(genetic_map, dtype=np.float64)
        if cm.shape != (ds.sizes["variants"],):
            raise InvalidArgumentError(f"genetic_map has shape {cm.shape}; expected one cM value per "
                             f"variant ({ds.sizes['variants']})")
    if not np.all(np.isfinite(cm)):
        bad = int(np.flatnonzero(~np.isfinite(cm))[0])
        raise InvalidArgumentError(f"genetic position of variant {bad} is not finite")
    if np.any(np.diff(cm) < 0):
        raise InvalidArgumentError("genetic positions must be non-decreasing along the variants")
    return cm / 100.0


def _choose_parents(
    ds: xr.Dataset, n_children: int, parents: Any, same_population: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    ids = np.asarray(ds["sample_id"].values).astype(str)
    n = len(ids)
    if parents is not None:
        pairs = np.asarray(parents)
        if pairs.shape != (n_children, 2):
            raise InvalidArgumentError(f"parents has shape {pairs.shape}; expected ({n_children}, 2)")
        if pairs.dtype.kind in "iu":
            if pairs.min() < 0 or pairs.max() >= n:
                raise InvalidArgumentError(f"parent indices must lie in [0, {n})")
            return pairs.astype(np.int64)
        lookup = {s: i for i, s in enumerate(ids)}
        unknown = sorted({str(p) for p in pairs.ravel()} - set(lookup))
        if unknown:
            raise InvalidArgumentError(f"parents not in the dataset: {unknown[:5]}")
        return np.vectorize(lookup.__getitem__, otypes=[np.int64])(pairs.astype(str))
    if n < 2:
        raise InvalidArgumentError("at least two samples are needed to form offspring")
    if same_population and "sample_population" in ds:
        labels = np.asarray(ds["sample_population"].values).astype(str)
    else:
        labels = np.zeros(n, dtype="U1")
    groups = {g: np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())}
    pools = [g for g in groups.values() if len(g) >= 2]
    if not pools:
        raise InvalidArgumentError("no population has two samples to act as parents")
    eligible = np.concatenate(pools)
    pairs = np.empty((n_children, 2), dtype=np.int64)
    first = rng.choice(eligible, size=n_children)
    for k, a in enumerate(first):
        mates = groups[labels[a]]
        b = mates[rng.integers(len(mates) - 1)]
        pairs[k] = a, (b if b != a else mates[-1])
    return pairs


def _draw_crossovers(
    morgans: np.ndarray, n_transmissions: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Crossover positions (Morgans) per transmitted haplotype: a unit-rate Poisson process."""
    lo, hi = float(morgans[0]), float(morgans[-1])
    counts = rng.poisson(hi - lo, size=n_transmissions)
    return [np.sort(rng.uniform(lo, hi, size=c)) for c in counts]


def _transmit_block(
    parent_gt: np.ndarray, morgans: np.ndarray, *, owner: np.ndarray, xo: np.ndarray,
    start_hap: np.ndarray, source: np.ndarray,
) -> np.ndarray:
    """Child genotypes for one block of variants.

    ``parent_gt`` is ``(variants, parents, 2)``; transmission ``t`` copies parent
    ``source[t]``, starting on haplotype ``start_hap[t]`` and switching at each crossover
    ``xo[owner == t]``. Returns ``(variants, n_transmissions // 2, 2)``.
    """
    n_var, n_t = len(morgans), len(source)
    switches = np.zeros((n_var + 1, n_t), dtype=np.int32)
    row = np.searchsorted(morgans, xo, side="right")  # first variant past the crossover
    np.add.at(switches, (row, owner), 1)
    parity = (np.cumsum(switches[:n_var], axis=0) + start_hap[None, :]) & 1
    child = np.take_along_axis(
        parent_gt[:, source, :], parity[:, :, None].astype(np.intp), axis=2)[:, :, 0]
    return child.reshape(n_var, n_t // 2, 2)


def form_offspring(
    ds: xr.Dataset,
    n_children: int,
    *,
    genetic_map: Any = None,
    seed: int | np.random.Generator = 0,
    parents: Any = None,
    same_population: bool = True,
    id_prefix: str = "child_",
) -> xr.Dataset:
    """Simulate children of panel members by meiosis along a genetic map.

    The offspring-formation augmentation of Dias et al. (2022, "Data augmentation"), who used
    sim1000G (Dimitromanolakis et al. 2019, BMC Bioinformatics 20:26) on HRC parents. Each child
    receives one haplotype from each parent; a transmitted haplotype starts on a random one of
    the parent's two haplotypes and switches at crossovers from a Poisson process of rate 1 per
    Morgan (Haldane's no-interference model) over the genetic span of the variants. Missing
    parental alleles are copied as missing.

    Parameters
    ----------
    ds
        Phased genotype dataset of the parents (NumPy or dask backed).
    n_children
        Number of children.
    genetic_map
        ``msprime.RateMap`` in 0-based coordinates (as in :class:`SimulatedPanel`), per-variant
        genetic positions in cM, or ``None`` to use ``ds.variant_genetic_position``.
    seed
        Seed or generator; the same seed gives the same children.
    parents
        Optional ``(n_children, 2)`` sample indices or sample ids. By default each child's first
        parent is drawn uniformly and the second uniformly among the other samples of the same
        ``sample_population`` (any other sample if ``same_population`` is False).
    same_population
        Draw both parents from one population.
    id_prefix
        Children are named ``f"{id_prefix}{k:04d}"``, k = 1, 2, ...

    Returns
    -------
    xarray.Dataset
        The children only: same variants, phased ``call_genotype`` (haplotype 0 from the first
        parent, 1 from the second), ``sample_population`` of the parents (``"A/B"`` if they
        differ). Attributes ``offspring_parents`` (pairs of parent ids) and
        ``offspring_crossovers_cM`` (per child, the two lists of crossover positions) record the
        truth.
    """
    if n_children < 1:
        raise InvalidArgumentError("n_children must be at least 1")
    variables.validate(ds, ["call_genotype", "variant_position", "sample_id"])
    if ds.sizes["ploidy"] != 2:
        raise InvalidArgumentError("offspring formation needs diploid genotypes")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    morgans = _variant_morgans(ds, genetic_map)
    pairs = _choose_parents(ds, n_children, parents, same_population, rng)
    crossovers = _draw_crossovers(morgans, 2 * n_children, rng)
    start_hap = rng.integers(0, 2, size=2 * n_children)

    used, source = np.unique(pairs.ravel(), return_inverse=True)
    owner = np.repeat(np.arange(2 * n_children), [len(c) for c in crossovers])
    xo = np.concatenate(crossovers) if crossovers else np.empty(0)
    parent_gt = ds["call_genotype"].isel(samples=used).data
    if not isinstance(parent_gt, np.ndarray):  # dask: transmit chunk by chunk, lazily
        import dask.array as da

        parent_gt = parent_gt.rechunk({1: -1, 2: -1})
        morgans_da = da.from_array(morgans, chunks=(parent_gt.chunks[0],))
        child_gt = da.map_blocks(
            lambda g, m: _transmit_block(g, m[:, 0, 0], owner=owner, xo=xo, start_hap=start_hap,
                                         source=source),
            parent_gt, morgans_da[:, None, None], dtype=parent_gt.dtype,
            chunks=(parent_gt.chunks[0], (n_children,), (2,)))
    else:
        child_gt = _transmit_block(np.asarray(parent_gt), morgans, owner=owner, xo=xo,
                                   start_hap=start_hap, source=source)

    ids = np.asarray(ds["sample_id"].values).astype(str)
    if "sample_population" in ds:
        pops = np.asarray(ds["sample_population"].values).astype(str)
        child_pop = [pops[a] if pops[a] == pops[b] else f"{pops[a]}/{pops[b]}" for a, b in pairs]
    else:
        child_pop = None
    optional = {k: ds[k].data for k in ("variant_id",) if k in ds}
    phased = np.ones((ds.sizes["variants"], n_children), dtype=bool)
    if not isinstance(child_gt, np.ndarray):
        import dask.array as da

        phased = da.ones((ds.sizes["variants"], n_children), dtype=bool,
                         chunks=(child_gt.chunks[0], -1))
    out = create_genotype_dataset(
        contigs=ds.attrs.get("contigs", ["."]),
        variant_contig=ds["variant_contig"].data,
        variant_position=ds["variant_position"].data,
        variant_allele=ds["variant_allele"].data,
        sample_id=[f"{id_prefix}{k + 1:04d}" for k in range(n_children)],
        sample_population=child_pop,
        call_genotype=child_gt,
        call_genotype_phased=phased,
        attrs={
            "source": "analysislib.simulate.genotypes.form_offspring",
            "offspring_parents": [[ids[a], ids[b]] for a, b in pairs],
            "offspring_crossovers_cM": [
                [(100 * crossovers[2 * k]).tolist(), (100 * crossovers[2 * k + 1]).tolist()]
                for k in range(n_children)],
        },
        **optional,
    )
    out["variant_genetic_position"] = ("variants", 100.0 * morgans)
    out["variant_genetic_position"].attrs["units"] = "cM"
    return out


def augment_with_offspring(
    ds: xr.Dataset, n_children: int, **kwargs: Any
) -> xr.Dataset:
    """Return ``ds`` with ``n_children`` simulated offspring appended along ``samples``.

    Dias et al. (2022) merged 30,000 sim1000G offspring with the 27,165 HRC genomes for
    fine-tuning. Keyword arguments go to :func:`form_offspring`. Only ``sample_id``,
    ``sample_population``, ``call_genotype`` and ``call_genotype_phased`` are carried for the
    merged samples; other per-sample variables (dosages, probabilities) are dropped.
    """
    children = form_offspring(ds, n_children, **kwargs)
    clash = set(np.asarray(ds["sample_id"].values).astype(str)) & set(
        np.asarray(children["sample_id"].values).astype(str))
    if clash:
        raise InvalidArgumentError(f"child ids clash with panel ids: {sorted(clash)[:5]}; "
                         "pass another id_prefix")
    sample_vars = [
        name for name in ("sample_id", "sample_population", "call_genotype",
                          "call_genotype_phased")
        if name in ds and name in children]
    merged = xr.concat([ds[sample_vars], children[sample_vars]], dim="samples")
    out = ds.drop_vars([v for v in ds.data_vars if "samples" in ds[v].dims]).assign(
        {name: merged[name] for name in sample_vars})
    out.attrs["offspring_parents"] = children.attrs["offspring_parents"]
    out.attrs["n_offspring"] = n_children
    return out

