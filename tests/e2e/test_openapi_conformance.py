"""schemathesis against /openapi.json of a real API process: no 5xx, responses match the schema.

Examples per operation are few (the suite must stay fast on two cores); each run still sends
hundreds of generated requests, valid and invalid, with a real admin key.
"""

import itertools
import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, positive_data_acceptance

from app.jobs.tasks import TASKS
from tests.e2e.processes import lookout_env, start_api, start_worker, stopping, wait_until

MAX_EXAMPLES = 6
# Operations whose parameters are each valid alone but may be refused together (422):
# stats (from, to and bucket may ask for more than MAX_BUCKETS buckets), promote (exactly one
# of person_id and name), person patch (at least one of name and ignored not null), webhooks
# (a URL is refused unless it resolves to a public address: the SSRF guard).
COMBINED_RULES = {
    "GET /v1/stats/counts",
    "POST /v1/faces/{face_id}/promote",
    "PATCH /v1/people/{person_id}",
    "POST /v1/webhooks",
    "PATCH /v1/webhooks/{webhook_id}",
}


@pytest.fixture(scope="module")
def live_api(servers, models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=tmp / "data",
        models_dir=models_dir,
    )
    api, base_url = start_api(env, tmp / "logs")
    # A worker too: with one alive /health/ready is 200, and uploads really run.
    worker = start_worker(env, tmp / "logs", "worker")
    with stopping(worker, api):
        wait_until(
            lambda: httpx.get(f"{base_url}/health/ready").status_code == 200, what="a worker"
        )
        yield base_url


# The run itself takes ~35 s alone; starting the API and a worker (module setup, counted in
# this test's time) takes up to a minute more on a shared two-core machine.
@pytest.mark.timeout(300)
def test_api_conforms_to_its_openapi_schema(live_api, api_key):
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    # Unknown query parameters are ignored, as HTTP APIs do (cache-busters, tracking tags);
    # everything the schema does describe is checked both ways.
    schema.config.generation.update(allow_extra_parameters=False)
    # Every check schemathesis has: server errors, schema, status codes, content types and
    # headers, negative data rejected, positive data accepted, missing headers, unsupported
    # methods (405 + Allow), ignored auth, object-level authorization, use after free.
    checks = CHECKS.get_all()
    failures: dict[str, str] = {}
    tested = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):
        tested.append(operation.label)
        # Some inputs are opaque by contract: an image body is "schema-valid" whatever its bytes
        # (format: binary), a pagination cursor whatever its text, yet only a decodable image
        # or a cursor the server handed out is accepted (422 says what is wrong). No schema can
        # say "a decodable JPEG", so "valid data accepted" cannot hold for those operations.
        # Every other check still runs on them.
        body = json.dumps(operation.definition.raw.get("requestBody", {}))
        takes_an_image = "binary" in body or "multipart/form-data" in body  # every form has one
        parameters = operation.definition.raw.get("parameters", [])
        takes_a_cursor = any(p.get("name") == "cursor" for p in parameters)
        combined_rule = operation.label in COMBINED_RULES
        # The DeepStack / CompreFace surfaces answer with those APIs' own statuses (CompreFace:
        # 400 "Subject already exists", code 43), which their clients expect: not ours to change.
        foreign_contract = operation.path.startswith(("/api/v1/", "/v1/vision/"))
        opaque = takes_an_image or takes_a_cursor or combined_rule or foreign_contract
        excluded = [positive_data_acceptance] if opaque else []

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run_case(case) -> None:
            case.call_and_validate(
                base_url=live_api,
                headers={"X-API-Key": api_key},
                checks=checks,
                excluded_checks=excluded,
            )

        try:
            run_case()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters
        except Exception as exc:  # keep going: report every operation that fails
            inner = "\n".join(str(e) for e in getattr(exc, "exceptions", ()))
            failures[f"{operation.label} ({mode.value})"] = f"{exc}\n{inner}"[:3000]
    assert len(operations) >= 8, tested
    assert not failures, "\n\n".join(f"{label}: {detail}" for label, detail in failures.items())
    metrics = httpx.get(f"{live_api}/metrics").text
    requests = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("lookout_http_request_duration_seconds_count")
    )
    print(f"\nschemathesis: {len(operations)} operations, {requests:.0f} requests, no failure")
    assert requests >= 5 * len(operations)


def test_the_schema_documents_the_api_key_and_error_statuses(live_api):
    document = httpx.get(f"{live_api}/openapi.json").json()
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    upload = document["paths"]["/v1/images"]["post"]["responses"]
    assert {"401", "403", "408", "409", "413", "415", "422", "429", "503"} <= set(upload)
    node_token = document["components"]["securitySchemes"]["NodeToken"]
    assert (node_token["type"], node_token["scheme"]) == ("http", "bearer")
    me = document["paths"]["/v1/nodes/me"]["get"]
    assert {"NodeToken": []} in me["security"]
    register = document["components"]["schemas"]["NodeCreate"]["properties"]
    task_enum = register["tasks"]["anyOf"][0]["items"]["enum"]
    assert task_enum == list(TASKS)  # the one list the service checks against
    assert register["store_frames"]["type"] == "boolean"
