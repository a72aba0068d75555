from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from leaderboard.views import accounts, api, cards, exports, networks, pages
from leaderboard.views import methodology

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/leaderboard", api.leaderboard, name="api-leaderboard"),
    path("api/matrix", api.matrix, name="api-matrix"),
    path("api/networks", api.network_create, name="api-network-create"),
    path("api/networks/<int:pk>", api.network_detail, name="api-network"),
    path("api/networks/<int:pk>/adversarial.npz", api.adversarial_npz, name="api-adversarial"),
    path("api/benchmarks/<slug:name>", api.benchmark_detail, name="api-benchmark"),
    path("api/benchmarks/<slug:name>/universal.npz", api.universal_npz, name="api-universal"),
    path("api/benchmarks/<slug:name>/eval-split.json", api.eval_split_json, name="api-eval-split"),
    path("api/benchmarks/<slug:name>/eval-split.csv", api.eval_split_csv, name="api-eval-split-csv"),
    # Downloads (issue 14): views/exports.py
    path("api/benchmarks/<slug:name>/leaderboard.csv", exports.leaderboard_csv, name="export-leaderboard-csv"),
    path("api/benchmarks/<slug:name>/leaderboard.json", exports.leaderboard_json, name="export-leaderboard-json"),
    path("api/benchmarks/<slug:name>/matrix.csv", exports.matrix_csv, name="export-matrix-csv"),
    path("api/benchmarks/<slug:name>/matrix.json", exports.matrix_json, name="export-matrix-json"),
    path("api/benchmarks/<slug:name>/cite.bib", exports.cite_bib, name="export-cite-bib"),
    path("api/networks/<int:pk>/results.json", exports.network_results_json, name="export-network-results-json"),
    path("api/networks/<int:pk>/results.csv", exports.network_results_csv, name="export-network-results-csv"),
    # Pages
    path("", pages.index, name="index"),
    path("networks/upload/", networks.upload, name="upload"),
    path("networks/<int:pk>/", networks.network_detail, name="network"),
    path("networks/<int:pk>/gallery/<int:index>.png", networks.gallery_image, name="network-gallery"),
    path("networks/<int:pk>/badge.svg", networks.network_badge, name="network-badge"),
    path("networks/<int:pk>/confusion/<int:source_pk>.json", networks.network_confusion, name="network-confusion"),
    path("networks/<int:pk>/visibility/", networks.network_visibility, name="network-visibility"),
    path("networks/<int:pk>/delete/", networks.network_delete, name="network-delete"),
    path("networks/<int:pk>/card/", cards.network_card_edit, name="network-card"),
    path("matrix/", pages.matrix, name="matrix"),
    path("benchmark/", pages.benchmark, name="benchmark"),
    path("methodology/", methodology.methodology_page, name="methodology"),
    path("benchmark/samples.png", pages.benchmark_samples, name="benchmark-samples"),
    path("benchmark/universal.png", pages.benchmark_universal, name="benchmark-universal"),
    # Accounts
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/profile/", accounts.profile, name="profile"),
    path("accounts/tokens/", accounts.token_create, name="token-create"),
    path("accounts/tokens/<int:pk>/revoke/", accounts.token_revoke, name="token-revoke"),
]
urlpatterns.append(path("healthz", pages.healthz, name="healthz"))
