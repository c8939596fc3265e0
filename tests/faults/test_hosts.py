"""Faults between hosts: a pool on a machine of its own (a network namespace on a bridge) loses
the broker, the database or storage for a while, or runs with a clock 90 s ahead. Every job must
still end ``succeeded`` exactly once, as in tests/faults/test_faults.py."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import HostRun
from tests.faults.test_faults import assert_clean
from tests.support.services import wait_for

HostRunFactory = Callable[..., HostRun]


def _partition_mid_task(hosted: HostRun, queue: str, service: str, seconds: float) -> None:
    run = hosted.run
    run.submit_all(pause_s=0.1)
    wait_for(lambda: run.segments_in(f"{queue}_running"), 120, f"a segment in {queue}_running", interval=0.02)
    hosted.host.cut(hosted.ports[service])
    time.sleep(seconds)
    hosted.host.heal(hosted.ports[service])
    run.wait_submitted()
    run.wait_finished(timeout=300)


def test_sovits_host_partitioned_from_the_broker_mid_task(host_fault_run: HostRunFactory) -> None:
    hosted = host_fault_run(
        "sovits host cut from Redis 15 s", "sovits",
        VOXMILL_ENGINE_OPTIONS_JSON='{"sovits_delay_s": 0.05}',
    )
    _partition_mid_task(hosted, "sovits", "redis", 15)
    assert_clean(hosted.run.account())


def test_gpt_host_partitioned_from_postgres_past_the_retry_deadline(host_fault_run: HostRunFactory) -> None:
    hosted = host_fault_run(
        "gpt host cut from PostgreSQL 20 s (deadline 3 s)", "gpt",
        VOXMILL_DB_RETRY_DEADLINE_S="3",
        VOXMILL_ENGINE_OPTIONS_JSON='{"gpt_delay_s": 0.05}',
    )
    _partition_mid_task(hosted, "gpt", "postgres", 20)
    assert_clean(hosted.run.account())


def test_post_host_partitioned_from_storage(host_fault_run: HostRunFactory) -> None:
    hosted = host_fault_run("post host cut from storage 40 s", "post")
    _partition_mid_task(hosted, "post", "storage", 40)
    assert_clean(hosted.run.account())


@pytest.mark.parametrize("offset_s", [90])
def test_a_host_whose_clock_runs_ahead(host_fault_run: HostRunFactory, offset_s: int) -> None:
    hosted = host_fault_run(f"sovits host clock +{offset_s} s", "sovits", clock_offset_s=offset_s)
    run = hosted.run
    # The skew is real inside that host's processes, not only configured.
    wait_for(lambda: "ready." in run.workers["sovits"].log(), 60, "the skewed pool")
    run.submit_all(pause_s=0.1)
    run.wait_submitted()
    run.wait_finished(timeout=300)
    assert_clean(run.account())
