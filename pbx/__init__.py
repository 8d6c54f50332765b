"""The SIP user-agent layer."""
