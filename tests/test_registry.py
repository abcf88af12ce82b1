"""The lazy imputer registry shared by every task."""

from __future__ import annotations

import subprocess
import sys

import pytest

from analysislib.registry import IMPUTERS, Registry, make_imputer, register_imputer


def test_each_task_lists_its_methods_and_the_old_names_are_the_same_registries():
    from analysislib.epigenome.imputer import EPIGENOME_IMPUTERS
    from analysislib.evaluate import IMPUTERS as GENOTYPE_IMPUTERS

    assert set(IMPUTERS["genotype"]) == {"allele_frequency", "beagle", "biunet", "dae", "minimac4", "scda"}
    assert set(IMPUTERS["epigenome"]) == {"avg", "edice", "predictd", "avocado", "chromimpute"}
    assert GENOTYPE_IMPUTERS is IMPUTERS["genotype"] and EPIGENOME_IMPUTERS is IMPUTERS["epigenome"]


def test_listing_and_making_a_light_method_imports_no_torch():
    code = ("import sys; from analysislib.registry import IMPUTERS, make_imputer; sorted(IMPUTERS['genotype']); "
            "make_imputer('genotype', 'allele_frequency'); make_imputer('epigenome', 'avg'); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("task", "name", "parameters"), [
    ("genotype", "biunet", {"presett": "quick"}),
    ("genotype", "dae", {"thread": 2}),
    ("epigenome", "avg", {"seed": 1}),
    ("epigenome", "edice", {"epoch": 3}),
])
def test_a_misspelt_parameter_fails_at_construction_with_the_parameter_list(task, name, parameters):
    # Factories with a fixed signature get the registry's message (with their parameter list);
    # those passing settings on to a preset config get its message, as a ValueError too.
    with pytest.raises(ValueError, match=rf"'{next(iter(parameters))}'") as caught:
        make_imputer(task, name, **parameters)
    if name in ("dae", "avg"):
        assert "its parameters:" in str(caught.value)


def test_unknown_names_and_tasks_list_what_is_known():
    with pytest.raises(KeyError, match="unknown epigenomic imputer 'avocadoo'; registered: avg, avocado"):
        make_imputer("epigenome", "avocadoo")
    with pytest.raises(KeyError, match="unknown task 'gwas'; tasks with imputers: epigenome, genotype"):
        make_imputer("gwas", "ldsc")


def test_registering_a_callable_or_a_path(monkeypatch):
    registry = Registry("toy imputer", {"af": "analysislib.genotype.imputer:AlleleFrequencyImputer"})
    registry["mine"] = lambda *, scale=1: ("built", scale)
    assert registry.make("mine", scale=3) == ("built", 3)
    assert registry.make("af").name == "allele_frequency"
    assert registry.keywords("mine") == ({"scale"}, False)
    monkeypatch.setitem(IMPUTERS, "genotype", Registry("genotype imputer", dict(IMPUTERS["genotype"])))
    register_imputer("genotype", "copy_of_af", "analysislib.genotype.imputer:AlleleFrequencyImputer")
    assert make_imputer("genotype", "copy_of_af").name == "allele_frequency"
