"""Conformance runners (placeholder: part A provides this package file)."""
