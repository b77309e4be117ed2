"""SMPP 3.4 layer: PDU codec, sans-IO session, Twisted ESME client and SMSC simulator.

Also owns the SMS text layer (GSM 03.38 / 3GPP TS 23.038 alphabets, UCS2), UDH and
concatenation (3GPP TS 23.040 §9.2.3.24) and delivery receipts (SMPP 3.4 Appendix B).
Knows nothing about wallets or ledgers.
"""
