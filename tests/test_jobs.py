"""Each periodic job has one name, the same in beat, in the worker's task and in `manage.py maintenance`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command

from accessreq.jobs import JOBS

pytestmark = pytest.mark.django_db


def test_it_schedules_every_job_under_its_own_name() -> None:
    assert set(settings.CELERY_BEAT_SCHEDULE) == set(JOBS) == set(settings.JOB_SCHEDULE)
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] == "accessreq.tasks.run_job"
        assert entry["args"] == (name,)


def test_it_runs_each_job_by_that_name_from_the_command(acr) -> None:
    out = StringIO()
    call_command("maintenance", *JOBS, stdout=out)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == list(JOBS)


def test_it_refuses_an_unknown_job() -> None:
    with pytest.raises(Exception, match="Unknown job sweep-stuck-provisioning"):
        call_command("maintenance", "sweep-stuck-provisioning")
