"""Billing reacts to tenants: every tenant gets a credit balance row when it is created."""
from django.db.models.signals import post_save
from django.dispatch import receiver

from tenants.models import Tenant

from .models import CreditBalance


@receiver(post_save, sender=Tenant, dispatch_uid="billing.open_balance")
def open_balance(sender, instance: Tenant, created: bool, **kwargs) -> None:
    if created:
        CreditBalance.objects.get_or_create(tenant=instance)
