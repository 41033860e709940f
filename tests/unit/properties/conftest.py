"""Hypothesis profiles for the property tests of the request parsers.

``CI=true`` loads ``ci``: derandomized (examples derive from each test's name and code, so a run is
reproducible) and without an example database. Elsewhere ``dev`` draws fresh examples each run and keeps
the failing ones so they are tried first next time. Hypothesis keeps its files under ``.pytest_cache``
(ignored by git), not in a ``.hypothesis`` of the working tree. A property's known failures stay covered by
explicit ``@example``s in either profile.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(__file__).resolve().parents[3] / ".pytest_cache" / "hypothesis")

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
