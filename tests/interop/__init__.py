"""Interop tests: stkpay against programs nobody here wrote (Kannel, Kannel's test SMSC)."""
