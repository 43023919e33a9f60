"""cdm_core.analysis: see docs/architecture.md."""
