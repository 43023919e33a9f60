"""cdm_core.engine: see docs/architecture.md."""
