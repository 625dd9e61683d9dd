from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        from atoms.embedding import register_text_provider

        from .embedders import MODEL_NAME, MiniLMProvider

        register_text_provider(MiniLMProvider, name=MODEL_NAME)

        from atoms.signals import model_file_ingested

        from .tasks import on_model_file

        model_file_ingested.connect(on_model_file, dispatch_uid="inference.on_model_file")
