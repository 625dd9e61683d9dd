"""Model jobs end to end through the real ASGI server and Celery worker: POST queues, the worker runs
it, GET /api/models/jobs/{task} reports the state and the result (or the reason it failed)."""
from __future__ import annotations

import time
import uuid

import pytest

from inference.tests.api_endpoints import make_layered_model
from tests.live_http import call as _call

pytestmark = pytest.mark.live


def _settled(base: str, key: str, task: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, job = _call("GET", f"{base}/api/models/jobs/{task}", key)
        assert status == 200, job
        if job["status"] in ("finished", "failed"):
            return job
        assert time.monotonic() < deadline, f"the job is still {job['status']} after {timeout} s"
        time.sleep(0.3)


def test_a_student_is_extracted_by_the_worker_and_its_job_reports_it(asgi_server, celery_worker, alpha, beta,
                                                                      committed):
    parent = make_layered_model(alpha)["id"]
    texts = ["a b a b a b a b a b a b a b a b a b a b " + uuid.uuid4().hex]
    status, job = _call("POST", f"{asgi_server}/api/models/{parent}/students", alpha.keys["write"],
                        {"drop": 1, "texts": texts, "max_tokens": 32, "name": "tiny3-student"})
    assert status == 202 and job["status"] == "queued" and job["kind"] == "student", job
    assert _call("GET", f"{asgi_server}/api/models/jobs/{job['task']}", beta.keys["all"])[0] == 404

    done = _settled(asgi_server, alpha.keys["read"], job["task"])
    assert done["status"] == "finished" and done["error"] == "", done
    assert len(done["result"]["dropped"]) == 1 and done["result"]["student_perplexity"] > 1
    status, student = _call("GET", f"{asgi_server}/api/models/{done['result']['student']}", alpha.keys["read"])
    assert status == 200 and student["name"] == "tiny3-student"
    assert student["hyperparameters"]["block_count"] == 2
    assert [(e["parent"], e["relation"]) for e in student["lineage"]] == [(parent, "student_of")]
    assert _call("GET", f"{asgi_server}/api/models/{student['id']}", beta.keys["all"])[0] == 404


def test_a_job_that_cannot_run_fails_with_the_reason(asgi_server, celery_worker, alpha, committed):
    model = make_layered_model(alpha)["id"]
    tag = uuid.uuid4().hex  # no atom carries it: the datastore has nothing to hold
    status, job = _call("POST", f"{asgi_server}/api/models/{model}/knn", alpha.keys["write"],
                        {"max_atoms": 5, "metadata": {"tag": tag}})
    assert status == 202, job
    done = _settled(asgi_server, alpha.keys["read"], job["task"])
    assert done["status"] == "failed" and "no text atoms" in done["error"], done
    assert done["finished_at"] and done["result"] == {}


@pytest.mark.django_db
def test_a_job_that_cannot_be_queued_fails_with_the_reason(alpha, monkeypatch, django_capture_on_commit_callbacks):
    from django.db import connection

    from hartonomous.celery import app
    from inference.models import Model, ModelJob
    from inference.tasks import model_job_enqueue

    model_id = make_layered_model(alpha)["id"]
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setattr(app, "_pool", None)
    monkeypatch.setattr(app.amqp, "_producer_pool", None)
    connection.set_tenant(alpha.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        job = model_job_enqueue(tenant=alpha.tenant, kind="student", model=Model.objects.get(pk=model_id),
                                params={"drop": 1})
    job = ModelJob.objects.get(pk=job.pk)
    assert job.state == "failed" and "could not be queued" in job.error and job.finished_at
