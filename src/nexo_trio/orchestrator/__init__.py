"""The goal orchestrator: goal loop, acceptance evaluator, workspaces."""
