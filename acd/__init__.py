"""Automatic call distribution: presence, queues, strategies, the dispatcher (issue 4)."""
