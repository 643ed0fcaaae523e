"""Spark access: the session and header-checked reads of landed files."""
