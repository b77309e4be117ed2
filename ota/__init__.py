"""OTA card management: ETSI TS 102 225 / 3GPP TS 31.115 secured command and response
packets, per-card key diversification ("one card, one key"), counters, proofs of receipt,
APDU scripts, campaigns and the SMS-PP bearer.
"""
