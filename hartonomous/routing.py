from django.urls import path

from inference.consumers import GenerateConsumer

from .consumers import ProgressConsumer

websocket_urlpatterns = [
    path("ws/progress/", ProgressConsumer.as_asgi()),
    path("ws/generate/", GenerateConsumer.as_asgi()),
]
