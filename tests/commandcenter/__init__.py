"""Tests of the command-center contract (topics, payloads, AsyncAPI) and of the MQTT link against real brokers."""
