"""End-to-end wallet tests over loopback TCP: phones, the SMSC simulator, the gateway."""
