"""Escalation: side effects of incidents, delivered at least once from the durable outbox."""
