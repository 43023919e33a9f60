"""cdm_core.report: see docs/architecture.md."""
