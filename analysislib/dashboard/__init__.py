"""The methods dashboard: a Panel app that reads the results store and nothing else.

The app lives in :mod:`analysislib.dashboard.app` (class ``Dashboard``); importing this package
does not import Panel. Serve it with ``analysislib dashboard`` or
``panel serve analysislib/dashboard/app.py`` (store folder: ``$ANALYSISLIB_RESULTS`` or
``./results``); in a notebook, ``from analysislib.dashboard.app import Dashboard; Dashboard()``.
"""

from __future__ import annotations

__all__: list[str] = []
