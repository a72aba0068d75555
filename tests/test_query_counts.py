"""SQL queries per request do not grow with the number of networks (issue 7, item 5).

The leaderboard page, a network page, the API leaderboard and the API network detail
are requested at N = 5 and again at N = 100 networks (fake_suite: stored results
without TensorFlow, every pair of the matrix filled); each must issue exactly the
same number of queries, for an anonymous visitor and for a logged-in owner.
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
