"""One module per outside system; each returns typed, timestamped readings and never raises
for a fault of the outside world. Sources import nothing from the rest of aidash_lib."""

from aidash_lib.sources.base import Fault, FaultKind, Reading

__all__ = ["Fault", "FaultKind", "Reading"]
