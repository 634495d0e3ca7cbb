"""Tests of the wire formats: goal and config files."""
