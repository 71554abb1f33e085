"""Web console accounts: operators, roles, password hashing, sessions, CSRF, login throttling and the audit log."""
