"""The OpenAI-compatible surface, mounted at /v1/ (so a client's base_url is http://host/v1)."""
from django.urls import path

from . import generation_views as g

urlpatterns = [
    path("chat/completions", g.ChatCompletionsView.as_view(), name="openai-chat-completions"),
    path("models", g.OpenAIModelListView.as_view(), name="openai-models"),
]
