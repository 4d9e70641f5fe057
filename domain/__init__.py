"""Business rules shared by the HTTP handlers and the WebSocket methods.

Functions take a Principal and plain values and return plain data (dicts/lists)."""
