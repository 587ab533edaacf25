"""Shared code of the jepsen-style harness (imported by the scripts in ../ via sys.path)."""
