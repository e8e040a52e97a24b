"""The stages of a run: search -> decoder -> generate -> evaluate."""
