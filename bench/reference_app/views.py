"""A bare DRF endpoint: token auth, parse JSON, insert one row, answer JSON.

It is what POST /api/adoptions would cost with no domain logic at all, on the same server,
middleware, authentication, parser and renderer: the reference for the API figures.
"""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import ReferenceRow


class ReferenceInsertView(APIView):
    def post(self, request):
        row = ReferenceRow.objects.create(pet_id=request.data["pet_id"], user_id=request.user.pk)
        return Response({"id": row.id, "pet_id": row.pet_id}, status=status.HTTP_201_CREATED)
