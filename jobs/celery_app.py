"""The Celery app factory, the queues, every task name and its route — declared here and only
here. In embedded mode the same app runs every task in-process (``task_always_eager``), so the
embedded default and the distributed deployment execute the same task code."""

from __future__ import annotations

import importlib
from enum import Enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from celery import Celery, Task
from kombu.entity import Exchange, Queue

from jobs.settings import Settings

if TYPE_CHECKING:
    from jobs.runtime import Runtime


class TaskName(str, Enum):
    PLAN_JOB = "voxmill.gpt.plan_job"
    SYNTHESIZE_SEMANTIC = "voxmill.gpt.synthesize_semantic"
    SYNTHESIZE_WAVEFORM = "voxmill.sovits.synthesize_waveform"
    PROCESS_VOICE = "voxmill.sovits.process_voice"
    VOICE_FEATURES = "voxmill.sovits.voice_features"
    FINISH_SEGMENT = "voxmill.post.finish_segment"
    ASSEMBLE_JOB = "voxmill.post.assemble_job"
    DELIVER_WEBHOOK = "voxmill.post.deliver_webhook"
    SWEEP = "voxmill.post.sweep"
    REGENERATE_PROJECTS = "voxmill.gpt.regenerate_projects"

    def __str__(self) -> str:
        return self.value

    @property
    def queue(self) -> str:
        return self.value.split(".")[1]


QUEUES = ("gpt", "sovits", "post")
# A route names the queue only: Celery then publishes to the default exchange with the queue's
# name as routing key, which reaches exactly that queue on Redis and AMQP alike, with no binding
# involved. A binding is a broker key that a Redis restarted without persistence loses, and a
# publisher that declared it before would not declare it again: its messages would go nowhere.
ROUTES: dict[str, dict[str, str]] = {name.value: {"queue": name.queue} for name in TaskName}

# Each module exposes register(app); importing them by name keeps jobs/ free of imports of the
# workers while the app still knows every task it can send.
TASK_MODULES = (
    "workers.gpt.tasks",
    "workers.sovits.tasks",
    "workers.post.tasks",
    "jobs.webhooks",
    "jobs.sweeper",
    "jobs.projects",
)


class VoxmillTask(Task):  # type: ignore[misc]
    """Base of every voxmill task: late acks (a task killed mid-run is redelivered), rejected
    back to the queue when its worker dies, and the process's ``Runtime`` at hand."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    # Retries are capped by voxmill's own counts (segment attempts in the database, webhook
    # attempts), never by Celery's: its default of 3 would drop the 4th retry's message and
    # leave the segment running until its deadline. (retry(max_retries=None) means "the
    # default", so the default itself must be None.)
    max_retries = None

    @property
    def runtime(self) -> "Runtime":
        runtime: Runtime = self.app.voxmill_runtime
        return runtime

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from jobs.logs import bind_log_context, clear_log_context

        bind_log_context(task=self.name, task_id=self.request.id, args=list(args))
        try:
            return super().__call__(*args, **kwargs)
        finally:
            clear_log_context()


def bound_task(app: Celery, name: TaskName) -> Callable[[Callable[..., Any]], Task]:
    """The decorator that registers a task on ``app`` under ``name``: bound (it reads
    ``self.runtime`` and ``self.request``) and never shared with other apps."""
    return cast(Callable[[Callable[..., Any]], Task], app.task(bind=True, shared=False, name=name.value))


def create_celery_app(settings: Settings, runtime: "Runtime | None" = None) -> Celery:
    from jobs.runtime import Runtime

    app = Celery("voxmill", broker=settings.broker_url, task_cls=VoxmillTask, set_as_current=False)
    app.voxmill_runtime = runtime or Runtime(settings)
    app.conf.update(
        # The default exchange ("") with the queue's name as routing key: a message lands in
        # exactly its queue, and no broker binding is involved (see ROUTES).
        task_queues=[Queue(name, Exchange(""), routing_key=name) for name in QUEUES],
        task_default_queue="post",
        # Redis brokers: kombu's transport with the unacked bookkeeping on the broker's clock, so
        # a host whose clock is off never takes back another host's work (jobs/broker_clock.py).
        **({"broker_transport": "jobs.broker_clock:Transport"} if settings.broker_url.startswith("redis") else {}),
        task_routes=ROUTES,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_timeout": settings.broker_socket_timeout_s,
            "socket_connect_timeout": settings.broker_connect_timeout_s,
            # Scan for a dead worker's unacked messages every interval (throttle 1), not every
            # ten intervals: recovery after kill -9 is visibility timeout + this.
            "unacked_restore_interval": settings.broker_restore_interval_s,
            "unacked_restore_throttle": 1,
            **({"global_keyprefix": settings.broker_key_prefix} if settings.broker_key_prefix else {}),
        },
        # A publish to a dead broker fails after (1 + retries) tries instead of blocking the
        # caller; after-commit publishes are then left to the sweeper (jobs.runtime).
        task_publish_retry_policy={
            "max_retries": settings.broker_publish_retries,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
        worker_max_memory_per_child=settings.worker_max_memory_per_child_kb or None,
        beat_schedule={
            "sweep": {
                "task": TaskName.SWEEP.value,
                "schedule": settings.sweep_interval_s,
                # A sweep still queued when the next one is due is dropped, not run late.
                "options": {"expires": settings.sweep_interval_s},
            },
            "regenerate-projects": {
                "task": TaskName.REGENERATE_PROJECTS.value,
                "schedule": settings.projects_check_every_s,
            },
        },
    )
    for module_name in TASK_MODULES:
        importlib.import_module(module_name).register(app)
    return app
