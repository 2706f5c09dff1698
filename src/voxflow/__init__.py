"""voxflow: a self-hosted call-flow server, wire-compatible with the iovox REST API."""

__version__ = "0.1.0"
