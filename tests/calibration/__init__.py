"""Tests of calibration/: the RF model, the calibration file, the handset table, the instrument."""
