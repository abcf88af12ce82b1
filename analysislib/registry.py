"""One lazy registry of imputers for every task: method name -> class, imported on first use.

:data:`IMPUTERS` holds a :class:`Registry` per task (``"genotype"``, ``"epigenome"``). Each maps
a method name to ``"module:attribute"`` (imported only when that method is made, so listing or
validating names never imports torch) or to a callable. :meth:`Registry.make` checks the
keyword parameters against the factory's signature before calling it, so a misspelt parameter
fails at once with the method's parameter list, whatever the task.

>>> from analysislib.registry import IMPUTERS, make_imputer
>>> sorted(IMPUTERS)
['epigenome', 'genotype']
>>> "beagle" in IMPUTERS["genotype"]
True
>>> make_imputer("epigenome", "avg").name
'avg'
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from analysislib.errors import InvalidArgumentError

__all__ = ["IMPUTERS", "Registry", "make_imputer", "register_imputer"]


class Registry(dict[str, "str | Callable[..., Any]"]):
    """Method name -> ``"module:attribute"`` or a callable that builds the method.

    A plain dict (add entries with ``registry[name] = factory``) with lazy construction.

    Parameters
    ----------
    what
        What the entries build, for messages (``"genotype imputer"``).
    entries
        Initial name -> factory entries.
    """

    def __init__(self, what: str, entries: dict[str, str | Callable[..., Any]] | None = None) -> None:
        super().__init__(entries or {})
        self.what = what

    def factory(self, name: str) -> Callable[..., Any]:
        """The callable registered as ``name``, imported if given as ``"module:attribute"``.

        Raises
        ------
        KeyError
            If nothing is registered as ``name`` (the message lists what is).
        """
        try:
            factory = self[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(sorted(self))}") from None
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            factory = getattr(importlib.import_module(module), attribute)
        return factory

    def keywords(self, name: str) -> tuple[set[str], bool]:
        """The keyword parameters ``name``'s factory names, and whether it takes others (``**kwargs``)."""
        return _keywords(self.factory(name))

    def make(self, name: str, **parameters: Any) -> Any:
        """Build the method registered as ``name`` with keyword ``parameters``.

        Raises
        ------
        KeyError
            If nothing is registered as ``name``.
        ValueError
            If the factory takes no parameter of a given name (the message lists those it takes).
        """
        factory = self.factory(name)
        names, open_ended = _keywords(factory)
        unknown = sorted(set(parameters) - names)
        if unknown and not open_ended:
            takes = ", ".join(sorted(names)) or "none"
            raise InvalidArgumentError(f"{self.what} {name!r} takes no parameter {', '.join(map(repr, unknown))} "
                             f"(its parameters: {takes})")
        try:
            return factory(**parameters)
        except TypeError as err:  # an open-ended factory passed a name on to something that lacks it
            if "unexpected keyword argument" not in str(err):
                raise
            raise InvalidArgumentError(f"{self.what} {name!r}: {err}") from err


def _keywords(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword parameters a factory names, and whether it takes any other (``**kwargs``)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return set(), True
    kinds = {p.kind for p in signature.parameters.values()}
    names = {n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, inspect.Parameter.VAR_KEYWORD in kinds


IMPUTERS: dict[str, Registry] = {
    "genotype": Registry("genotype imputer", {
        "allele_frequency": "analysislib.genotype.imputer:AlleleFrequencyImputer",
        "beagle": "analysislib.genotype.hmm:BeagleImputer",
        "biunet": "analysislib.genotype.unet:BiUNetImputer",
        "dae": "analysislib.genotype.dae:DAEImputer",
        "minimac4": "analysislib.genotype.hmm:Minimac4Imputer",
        "scda": "analysislib.genotype.unet:SCDAImputer",
    }),
    "epigenome": Registry("epigenomic imputer", {
        "avg": "analysislib.epigenome.imputer:AverageImputer",
        "edice": "analysislib.epigenome.edice:EDICEImputer",
        "predictd": "analysislib.epigenome.factorisation:PredictdImputer",
        "avocado": "analysislib.epigenome.factorisation:AvocadoImputer",
        "chromimpute": "analysislib.epigenome.chromimpute:ChromImputeImputer",
    }),
}


def _registry(task: str) -> Registry:
    try:
        return IMPUTERS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; tasks with imputers: {', '.join(sorted(IMPUTERS))}") from None


def make_imputer(task: str, name: str, **parameters: Any) -> Any:
    """Build the ``task`` imputer registered as ``name`` (:meth:`Registry.make`)."""
    return _registry(task).make(name, **parameters)


def register_imputer(task: str, name: str, factory: str | Callable[..., Any]) -> None:
    """Make an imputer available under ``name`` to ``task``'s harness and command line."""
    _registry(task)[name] = factory
