"""Credentials that cross process boundaries: the internal assertion (and, later, the provider
catalogue, connect flow and token vault). No web framework here."""
