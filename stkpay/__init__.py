"""Service assembly: configuration, wiring, the ``stkpay`` CLI, admin API and metrics.
Holds no business rules.
"""

__version__ = "0.1.0"
