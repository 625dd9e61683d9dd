from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and security"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .models import Domain, Tenant
        from .selectors import forget_hosts

        for model in (Domain, Tenant):
            post_save.connect(forget_hosts, sender=model, dispatch_uid=f"forget_hosts_save_{model.__name__}")
            post_delete.connect(forget_hosts, sender=model, dispatch_uid=f"forget_hosts_delete_{model.__name__}")
