"""Authentication and authorisation: one path for HTTP and WebSocket callers."""

from auth.principal import Principal, Role, required_role

__all__ = ["Principal", "Role", "required_role"]
