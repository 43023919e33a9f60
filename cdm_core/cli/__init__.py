"""cdm_core.cli: see docs/architecture.md."""
