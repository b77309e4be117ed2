"""Tests of ota/: secured packets, SMS-PP, keys, counters, remote APDUs, scripts, PC/SC."""
