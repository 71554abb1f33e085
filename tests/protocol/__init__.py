"""Tests of wire protocol v1: codecs, signatures, and the vectors of docs/PROTOCOL.md."""
