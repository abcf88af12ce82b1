"""Named settings of every method and simulator, with one vocabulary and one error.

Each method keeps its presets in a :class:`Presets` table, built where the method is defined
(``BIUNET_PRESETS`` in :mod:`analysislib.genotype.unet`, ``EDICE_PRESETS`` in
:mod:`analysislib.epigenome.edice`, ...). Every table answers to ``quick`` (minutes on a laptop,
for the demo and tests) and ``full`` (the paper's settings); some add ``standard`` (a benchmark
budget) or a setting of their own (eDICE's ``entex``). Where a paper's word differs, an alias
maps it: ``paper`` means ``full`` everywhere. An unknown name, or an override naming no setting,
raises :class:`~analysislib.errors.PresetError` when the configuration is built, with the choices.

>>> from analysislib.presets import Presets
>>> table = Presets("toy model", {"quick": {"epochs": 2}, "full": {"epochs": 300}})
>>> table.resolve("paper", epochs=5)
{'epochs': 5}
>>> table.resolve("fast")
Traceback (most recent call last):
...
analysislib.errors.PresetError: unknown toy model preset 'fast'; choose from quick, full (aliases: paper -> full)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from analysislib.errors import PresetError

__all__ = ["DEFAULT_ALIASES", "Presets", "check_settings"]

T = TypeVar("T")

#: Aliases every table accepts (where the canonical name exists): the papers' word for ``full``.
DEFAULT_ALIASES: Mapping[str, str] = {"paper": "full"}


class Presets(Mapping[str, T], Generic[T]):
    """A method's named settings: a read-only mapping from preset name to settings.

    Settings are a dataclass instance (replaced field by field) or a dict of keyword settings.

    Parameters
    ----------
    what
        The method or simulator, for messages (``"BiU-Net"``).
    table
        Canonical name -> settings, in the order users should read them.
    aliases
        Extra names -> canonical names (added to :data:`DEFAULT_ALIASES`).
    fields
        For dict settings: every setting name an override may give (default: the union of the
        table's keys). Dataclass settings check their own fields.
    """

    def __init__(self, what: str, table: Mapping[str, T], *, aliases: Mapping[str, str] | None = None,
                 fields: set[str] | frozenset[str] | None = None) -> None:
        self.what = what
        self._table = dict(table)
        wanted = {**DEFAULT_ALIASES, **(aliases or {})}
        self.aliases = {alias: name for alias, name in wanted.items() if name in self._table and alias not in self._table}
        self._fields = frozenset(fields) if fields is not None else None

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself, or what its alias means).

        Raises
        ------
        PresetError
            If ``name`` is neither a preset nor an alias.
        """
        if name in self._table:
            return name
        if name in self.aliases:
            return self.aliases[name]
        aliases = ", ".join(f"{a} -> {n}" for a, n in self.aliases.items())
        raise PresetError(f"unknown {self.what} preset {name!r}; choose from {', '.join(self._table)}"
                          + (f" (aliases: {aliases})" if aliases else ""))

    def __getitem__(self, name: str) -> T:
        return self._table[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self.aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Presets({self.what!r}, {list(self._table)})"

    def fields(self) -> frozenset[str]:
        """Every setting an override may name."""
        if self._fields is not None:
            return self._fields
        first = next(iter(self._table.values()))
        if dataclasses.is_dataclass(first):
            return frozenset(f.name for f in dataclasses.fields(first))
        return frozenset(key for settings in self._table.values() for key in settings)  # type: ignore[attr-defined]

    def resolve(self, name: str | T, **overrides: Any) -> T:
        """The settings of preset ``name`` (or settings given directly) with ``overrides`` applied.

        Raises
        ------
        PresetError
            For an unknown preset name or an override that names no setting.
        """
        settings = self[name] if isinstance(name, str) else name
        check_settings(self.what, overrides, self.fields())
        if dataclasses.is_dataclass(settings):
            return dataclasses.replace(settings, **overrides) if overrides else settings  # type: ignore[type-var]
        return {**settings, **overrides}  # type: ignore[dict-item]


def check_settings(what: str, given: Mapping[str, Any] | Any, known: set[str] | frozenset[str]) -> None:
    """Raise :class:`~analysislib.errors.PresetError` if ``given`` names a setting not in ``known``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PresetError(f"unknown {what} setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
