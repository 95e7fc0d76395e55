"""Prefect tasks: one core call each, URIs in and out (installed as diffpath_tasks)."""
