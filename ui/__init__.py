"""Streamlit helpers shared by the pages (state, caching, messages). The engine is cdm_core."""
