"""Placeholder: filled in by the module owner."""
