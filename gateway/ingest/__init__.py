"""Adapters that receive signals from wearables (HTTPS now; SMS and BLE later) and feed the one pipeline."""
