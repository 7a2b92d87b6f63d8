"""Transfers of the Cloud 66 provider."""
