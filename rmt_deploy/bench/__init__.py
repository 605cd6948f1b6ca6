"""Comparators and reports: parity, accuracy, latency, environment. No backend imports here."""
