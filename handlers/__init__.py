"""The application: route each MO by content (secured wallet action, calibration SMS,
OTA proof of receipt, text command), authenticate it, call the ledger, calibration or OTA,
and choose the reply. Speaks neither SMPP nor SQL directly.
"""
