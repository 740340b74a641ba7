"""Building and removing a pod: the plan, the orchestrator, sandbox and container children."""
