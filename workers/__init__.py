"""Ferryman workers: the Celery app, its tasks, and one adapter per outside system."""
