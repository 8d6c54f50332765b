"""Shared plumbing: settings, database, Redis, logging, events. Imports no other package of ours."""
