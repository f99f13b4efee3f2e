"""The product version, shown by `GET /`, `/health` and the CLI."""

__version__ = "0.1.0"
