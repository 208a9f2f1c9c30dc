"""A bare DRF endpoint: token auth, parse JSON, insert one row, answer JSON.

It is what POST /api/adoptions would cost with no domain logic at all, on the same server,
middleware, authentication, parser and renderer: the reference for the API figures. Its
read twin answers GET with one row by primary key (the reference for the query figure).
"""

from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import ReferenceRow


class ReferenceInsertView(APIView):
    def post(self, request):
        row = ReferenceRow.objects.create(pet_id=request.data["pet_id"], user_id=request.user.pk)
        return Response({"id": row.id, "pet_id": row.pet_id}, status=status.HTTP_201_CREATED)


class ReferenceReadView(APIView):
    """GET one row by primary key, public: the reference for the query figure."""

    permission_classes = [AllowAny]

    def get(self, request, pk):
        row = ReferenceRow.objects.get(pk=pk)
        return Response({"id": row.id, "pet_id": row.pet_id, "created_at": row.created_at})
