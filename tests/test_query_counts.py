"""SQL queries per request do not grow with the number of networks (issue 7, item 5).

The leaderboard page, a network page, the API leaderboard and the API network detail
are requested at N = 5 and again at N = 100 networks (fake_suite: stored results
without TensorFlow, every pair of the matrix filled); each must issue exactly the
same number of queries, for an anonymous visitor and for a logged-in owner. Every HTML
page (matrix, benchmark, profile and upload form included) is also checked at 9 and at
204 networks.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from evaluator.services.ranking import benchmark_rank
from leaderboard.models import Network
from tests.fakes import fake_network, fake_suite

pytestmark = pytest.mark.django_db

SMALL, LARGE = 5, 100


def _counts(client, urls: list[str]) -> dict[str, int]:
    counts = {}
    for url in urls:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        counts[url] = len(ctx.captured_queries)
    return counts


def test_page_and_api_query_counts_are_constant_in_n(client) -> None:
    owner = User.objects.create_user("owner", password="pw-owner-123")
    suite = fake_suite(references=4, uploads=SMALL - 4, owner=owner)
    upload, ref = suite.uploads[0], suite.references[0]
    urls = ["/", f"/networks/{upload.pk}/", f"/networks/{ref.pk}/",
            "/api/leaderboard", f"/api/networks/{upload.pk}", f"/api/networks/{ref.pk}"]
    anonymous_small = _counts(client, urls)
    client.force_login(owner)
    owner_small = _counts(client, urls)
    client.logout()

    peers = [*suite.references, *suite.uploads]
    for j in range(LARGE - SMALL):
        peers.append(fake_network(suite.benchmark, suite.labels, name=f"more-{j}",
                                  strength=(j % 10 + 0.5) / 10, owner=owner if j % 2 else None,
                                  peers=list(peers), seed=900 + j))
    benchmark_rank(benchmark=suite.benchmark)
    assert Network.objects.filter(benchmark=suite.benchmark).count() == LARGE

    anonymous_large = _counts(client, urls)
    client.force_login(owner)
    owner_large = _counts(client, urls)
    assert anonymous_large == anonymous_small
    assert owner_large == owner_small
    # And the pages really list the larger suite.
    assert len(client.get("/api/leaderboard").json()["networks"]) == LARGE


def test_every_page_keeps_its_query_count_at_204_networks(client, alice, django_assert_max_num_queries) -> None:
    suite = fake_suite(references=4, uploads=5, owner=alice)
    client.force_login(alice)
    upload, ref = suite.uploads[0], suite.references[0]
    urls = ["/", "/?kind=uploads", f"/networks/{upload.pk}/", f"/networks/{ref.pk}/", "/matrix/",
            "/benchmark/", "/accounts/profile/", "/networks/upload/"]
    small = _counts(client, urls)
    peers = [*suite.references, *suite.uploads]
    for j in range(195):
        peers.append(fake_network(suite.benchmark, suite.labels, name=f"more-{j}", strength=(j % 10 + 0.5) / 10,
                                  owner=alice, peers=list(peers), seed=500 + j))
    benchmark_rank(benchmark=suite.benchmark)
    assert Network.objects.filter(benchmark=suite.benchmark).count() == 204
    for url in urls:
        with django_assert_max_num_queries(small[url]):
            response = client.get(url)
        assert response.status_code == 200
    assert _counts(client, urls) == small
    html = client.get("/matrix/").content.decode()
    assert "columns: the references" in html
    assert html.split('class="matrix"')[1].split("</table>")[0].count("<tr") == 1 + 204
