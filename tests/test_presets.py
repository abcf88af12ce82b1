"""One preset vocabulary and one error for every method and simulator."""

from __future__ import annotations

import importlib

import pytest

from analysislib.errors import PresetError
from analysislib.presets import Presets

TABLES = [
    "analysislib.genotype.unet:BIUNET_PRESETS", "analysislib.genotype.unet:SCDA_PRESETS",
    "analysislib.genotype.dae:DAE_PRESETS", "analysislib.genotype.tuning:TUNING_PRESETS",
    "analysislib.epigenome.edice:EDICE_PRESETS", "analysislib.epigenome.factorisation:PREDICTD_PRESETS",
    "analysislib.epigenome.factorisation:AVOCADO_PRESETS", "analysislib.epigenome.chromimpute:CHROMIMPUTE_PRESETS",
    "analysislib.epigenome.transfer:TRANSFER_PRESETS", "analysislib.simulate.genotypes:GENOTYPE_PRESETS",
    "analysislib.simulate.epigenome:EPIGENOME_PRESETS", "analysislib.simulate.gwas:GWAS_PRESETS",
]


def _table(path: str) -> Presets:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", TABLES)
def test_every_table_answers_to_quick_full_and_paper(path):
    table = _table(path)
    assert isinstance(table, Presets)
    for name in ("quick", "full", "paper"):
        assert name in table
        assert table[name] is table[table.canonical(name)]
    with pytest.raises(PresetError, match=r"preset 'no-such'; choose from .*quick"):
        table["no-such"]


@pytest.mark.parametrize("build", [
    lambda: __import__("analysislib.simulate.genotypes", fromlist=["x"]).simulate_genotypes("quick", bogus=1),
    lambda: __import__("analysislib.simulate.gwas", fromlist=["x"]).simulate_gwas("quick", bogus=1),
    lambda: __import__("analysislib.epigenome.edice", fromlist=["x"]).edice_config("quick", bogus=1),
    lambda: __import__("analysislib.epigenome.factorisation", fromlist=["x"]).avocado_config("quick", bogus=1),
    lambda: __import__("analysislib.genotype.unet", fromlist=["x"]).BiUNetImputer(bogus=1),
    lambda: __import__("analysislib.genotype.dae", fromlist=["x"]).DAEImputer(hparams={"bogus": 1e-3}),
    lambda: __import__("analysislib.genotype.dae", fromlist=["x"]).DAEImputer(tiling={"bogus": 3}),
], ids=["simulate_genotypes", "simulate_gwas", "edice_config", "avocado_config", "BiUNetImputer",
        "DAEImputer-hparams", "DAEImputer-tiling"])
def test_a_setting_that_does_not_exist_fails_at_construction_with_the_known_ones(build):
    with pytest.raises(PresetError, match=r"unknown .* setting 'bogus'; known: "):
        build()


def test_aliases_resolve_to_canonical_names_and_are_recorded_as_such():
    from analysislib.genotype.dae import DAEImputer
    from analysislib.genotype.unet import BiUNetImputer

    assert DAEImputer(preset="paper").preset == "full"
    assert BiUNetImputer(preset="paper").preset == "full"
    table = Presets("toy", {"paper": {"a": 1}, "quick": {"a": 2}}, aliases={"full": "paper"})
    assert table.canonical("full") == "paper" and list(table) == ["paper", "quick"]
    assert table.resolve("full", a=3) == {"a": 3}


def test_preset_error_is_a_value_error_and_a_key_error():
    assert issubclass(PresetError, ValueError) and issubclass(PresetError, KeyError)
    assert str(PresetError("plain message")) == "plain message"
