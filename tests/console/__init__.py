"""Tests of the web console accounts (gateway.console)."""
