"""The job lifecycle: states and guarded transitions, the Celery app and its routing, chains,
retries, the sweeper, storage and webhook delivery, and the one Settings class. A job's state
changes only in ``jobs.lifecycle``."""
