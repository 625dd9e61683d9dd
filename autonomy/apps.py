from django.apps import AppConfig


def _tuned_ef_search() -> int | None:
    from .models import IndexSettings

    return IndexSettings.objects.values_list("ef_search", flat=True).first()


class AutonomyConfig(AppConfig):
    name = "autonomy"

    def ready(self) -> None:
        from atoms.selectors import register_ef_search_source

        register_ef_search_source(_tuned_ef_search)  # what the reindex executor tunes, search reads
