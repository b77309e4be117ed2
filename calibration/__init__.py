"""Distance calibration: the handset (IMEI TAC) table, SMS auto-calibration decisions,
the instrument station over PC/SC (pyscard) and coverage figures.
"""
