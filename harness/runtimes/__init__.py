"""Runtimes start the seat and the proxies somewhere isolated: ``local`` (namespaces) or ``docker``."""
