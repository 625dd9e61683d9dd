from django.apps import AppConfig


class AtomsConfig(AppConfig):
    name = "atoms"
