"""The sans-I/O core: authentication, replay windows, incident state. No asyncio, no database, no clock reads."""
