"""Tests of the firmware simulator."""
