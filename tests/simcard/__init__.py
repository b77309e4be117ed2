"""Tests of the virtual phone and RF-SIM card model (simcard/)."""
