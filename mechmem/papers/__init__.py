"""One sub-package per paper; see docs/ARCHITECTURE.md."""
