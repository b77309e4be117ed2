"""The virtual phone and RF-SIM (wallet applet, e-purse, OTA endpoint) used by the SMSC
simulator, the demo and the tests. Never imported by production code paths.
"""
