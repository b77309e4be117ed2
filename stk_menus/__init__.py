"""STK menus: the wallet menu tree as data, its encoding as CAT proactive commands
(ETSI TS 102 223 BER-TLV), Jinja2 reply templates sized to SMS segments, and the wallet
MO action format. Pure codecs: no I/O.
"""
