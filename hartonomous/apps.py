from django.apps import AppConfig


class HartonomousConfig(AppConfig):
    name = "hartonomous"
    verbose_name = "Hartonomous platform"
