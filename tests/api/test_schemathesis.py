"""schemathesis against the OpenAPI document of the running API (in-process ASGI, distributed
mode on PostgreSQL and Redis, auth on with a real key): whatever it generates from the schema —
and whatever it sends that the schema forbids — the API answers without a 5xx. The number of
examples per operation is bounded so the run stays short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from jobs.runtime import Runtime
from jobs.submission import JobRequest, submit_job
from tests.support import factories
from tests.support.front import api, distributed_settings, new_key, new_tenant
from tests.support.services import redis_url

EXAMPLES_PER_OPERATION = 12
SEEN: set[tuple[str, int]] = set()


@pytest.fixture(scope="module")
def served(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Runtime, dict[str, str], dict[str, str]]]:
    home = tmp_path_factory.mktemp("schemathesis")
    # Limits high enough that the run explores the API rather than the 429 path (tested elsewhere).
    config = distributed_settings(
        pg_url, redis_url(11), home, rate_limit_requests_per_s=1000, rate_limit_burst=1000,
        max_upload_bytes=2 * 1024 * 1024,
    )  # fmt: skip
    with api(config) as (_, runtime, app):
        tenant_id = new_tenant(runtime)
        with runtime.transaction() as session:
            voice_id = factories.ready_voice(session, tenant_id).id
        job, _ = submit_job(runtime, tenant_id, JobRequest(text="A job to poke at.", voice_id=voice_id))
        yield app, runtime, new_key(runtime, tenant_id), {"voice_id": str(voice_id), "job_id": str(job.id)}


def test_no_server_errors(served: tuple[Any, Runtime, dict[str, str], dict[str, str]]) -> None:
    app, _, auth, real_ids = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    for operation in operations:
        # Requests that fit the schema and requests that do not, half and half.
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=strategy, aim=st.booleans())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, aim: bool) -> None:
            if aim:  # point half the examples at ids that exist, so they get past the 404s
                for name, value in real_ids.items():
                    if isinstance(case.path_parameters, dict) and name in case.path_parameters:
                        case.path_parameters[name] = value
                    if isinstance(case.body, dict) and name in case.body:
                        case.body[name] = value
            response = case.call(headers=auth)
            SEEN.add((f"{case.method.upper()} {case.path}", response.status_code))
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # every operation gets its run; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_the_run_got_past_the_front_door() -> None:
    """The examples above were authenticated and reached the routes (not only 401s and 422s)."""
    assert SEEN, "no example ran"
    assert 401 not in {status for _, status in SEEN}
    assert ("GET /v1/voices", 200) in SEEN and any(status == 404 for _, status in SEEN)
