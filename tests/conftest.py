"""Settings every test shares.

Hypothesis: no per-example deadline. Our property tests pin behaviour, not speed (speed lives
in bench/), and CI runs on a shared 2-core machine where a slow example is load, not a bug;
the too-slow health check is off for the same reason.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("stkpay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("stkpay")
