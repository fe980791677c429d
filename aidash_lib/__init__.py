"""aidash: an operations workbook for a LiteLLM gateway on your own GPUs.

Importing the package imports nothing heavy (no pandas, no Jupyter): the request logger that
runs inside the gateway's process depends on that.
"""

__version__ = "0.1.0"
