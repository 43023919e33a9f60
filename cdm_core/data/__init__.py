"""cdm_core.data: see docs/architecture.md."""
