"""Framework conventions as NumPy truth (placeholder; part A provides the real package module)."""
