"""History: samples, per-request records and events, behind one interface.

Importing this package imports nothing heavy: `schema` is standard library only, because the
request logger inside the gateway's process writes through it.
"""
