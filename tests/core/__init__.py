"""Tests of the sans-IO core (framing, events, reducer, classification) and the wire layer."""
