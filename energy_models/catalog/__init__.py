"""Spec catalogs: GPU and CPU sheets, LLM shapes, and Hugging Face config.json parsing."""
