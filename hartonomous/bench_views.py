"""A bare DRF view for the API benchmark's baseline (no auth, no throttle, no database).

Mounted only when HARTONOMOUS_BENCH_ENDPOINTS=1, never in a default deployment.
"""
from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        return Response({"ok": True, "echo": request.data}, status=201)
