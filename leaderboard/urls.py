from django.contrib import admin
from django.urls import path

from leaderboard.views import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/leaderboard", api.leaderboard, name="api-leaderboard"),
    path("api/matrix", api.matrix, name="api-matrix"),
    path("api/networks", api.network_create, name="api-network-create"),
    path("api/networks/<int:pk>", api.network_detail, name="api-network"),
    path("api/networks/<int:pk>/adversarial.npz", api.adversarial_npz, name="api-adversarial"),
    path("api/benchmarks/<slug:name>/universal.npz", api.universal_npz, name="api-universal"),
]
