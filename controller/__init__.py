"""The controller component: call flows, ACD, chat assignment, reply delivery, worker pool."""
