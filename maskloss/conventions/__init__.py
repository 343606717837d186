"""Framework conventions (placeholder: part A provides this package file)."""
