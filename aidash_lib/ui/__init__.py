"""ipywidgets panels and bqplot charts. They read history (the store), they never fetch from
the gateway or any other outside system."""
