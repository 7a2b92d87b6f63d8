"""Operators of the Cloud 66 provider."""
