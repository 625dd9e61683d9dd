import pytest
from django.db import connection

from autonomy.deadletter import dead_letter_discard
from autonomy.models import DeadLetter
from autonomy.tasks import flaky_task, phase_task

pytestmark = pytest.mark.django_db


def test_it_retries_with_backoff_1_2_4_8_16_seconds():
    assert phase_task.autoretry_for and phase_task.max_retries == 5
    assert (phase_task.retry_backoff, phase_task.retry_backoff_max, phase_task.retry_jitter) == (1, 16, False)
    from celery.utils.time import get_exponential_backoff_interval

    delays = [get_exponential_backoff_interval(factor=1, retries=n, maximum=16, full_jitter=False) for n in range(5)]
    assert delays == [1, 2, 4, 8, 16]


def test_it_dead_letters_a_task_after_its_last_retry(alpha):
    result = flaky_task.apply(args=[alpha.slug, 99, True])
    assert result.failed()
    connection.set_tenant(alpha.tenant)
    letter = DeadLetter.objects.filter(task="autonomy.flaky").latest("id")
    assert letter.args == [alpha.slug, 99, True] and "failed on purpose" in letter.error and letter.traceback
    assert letter.retries == 5 and letter.tenant == alpha.slug
    dead_letter_discard(letter=letter)
    assert DeadLetter.objects.get(pk=letter.pk).state == "discarded"


def test_it_dead_letters_a_poison_message_at_once_and_not_in_another_tenant(alpha, beta):
    flaky_task.apply(args=[alpha.slug, 1, False])
    connection.set_tenant(alpha.tenant)
    letter = DeadLetter.objects.filter(task="autonomy.flaky").latest("id")
    assert letter.retries == 0 and "poison" in letter.error
    connection.set_tenant(beta.tenant)
    assert not DeadLetter.objects.filter(task="autonomy.flaky", args=[alpha.slug, 1, False]).exists()


def test_it_succeeds_when_a_transient_failure_passes(alpha):
    assert flaky_task.apply(args=[alpha.slug, 2, True]).get() == 2
