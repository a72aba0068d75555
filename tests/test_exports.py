"""Downloads (issue 14): the leaderboard and the matrix as CSV and JSON, one network's
results as JSON and CSV, the BibTeX entry. Every file is parsed and checked against the
numbers stored in the database; who may download what follows the pages' rules.

`world` (tests/conftest.py): alice owns a public and a private upload, bob is the other
user, root is staff, each with an API token; two references.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.test import Client

from evaluator.models import AdversarialDataset, Evaluation
from evaluator.services.ranking import benchmark_rank
from leaderboard import exports, model_cards
from leaderboard.models import Network
from tests.fakes import fake_network

pytestmark = pytest.mark.django_db

ROLES = ("anon", "owner", "other", "staff")


def _csv(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def _get(client: Client, world, role: str, url: str, **params):
    token = world.token(role)
    headers = {"HTTP_AUTHORIZATION": f"Token {token.key}"} if token else {}
    return client.get(url, params, **headers)


def _filename(response) -> str:
    match = re.fullmatch(r'attachment; filename="([^"]+)"', response["Content-Disposition"])
    assert match, response["Content-Disposition"]
    return match.group(1)


def _close(text: str, value: float | None) -> bool:
    return (text == "" and value is None) or abs(float(text) - value) < 1e-9


# --------------------------------------------------------------------------- leaderboard


@pytest.mark.parametrize("role", ROLES)
def test_leaderboard_csv_and_json_hold_the_stored_numbers(client, world, role) -> None:
    bench = world.pub.benchmark
    card = model_cards.card_clean(paper_url="https://a.example/p", threat_norm="l2", threat_epsilon="1.5",
                                  architecture="=cmd|' /C calc'!A0")
    model_cards.network_card_update(network=world.pub, description="", card=card)
    url = f"/api/benchmarks/{bench.name}/leaderboard"
    as_csv = _get(client, world, role, url + ".csv")
    as_json = _get(client, world, role, url + ".json")
    assert as_csv.status_code == as_json.status_code == 200
    assert _filename(as_csv) == "leaderboard-mnist-5k.csv" and _filename(as_json) == "leaderboard-mnist-5k.json"
    rows, data = _csv(as_csv), json.loads(as_json.content)
    # The same networks, in the API's order; the private one only to its owner and staff.
    api = _get(client, world, role, "/api/leaderboard").json()["networks"]
    assert [int(r["id"]) for r in rows] == [r["id"] for r in data["networks"]] == [r["id"] for r in api]
    assert (world.priv.pk in [r["id"] for r in api]) == (role in ("owner", "staff"))
    assert data["last_updated"] == bench.ranked_at.isoformat() and data["benchmark"] == bench.name
    for row in rows:
        net = Network.objects.get(pk=int(row["id"]))
        assert row["name"] == net.name and row["status"] == net.status
        assert row["level"] == ("" if net.level is None else str(net.level))
        for prefix in ("clean", "universal", "whitebox", "robust"):
            for part, field in (("accuracy", "accuracy"), ("low", "low"), ("high", "high")):
                assert _close(row[f"{prefix}_{part}"], getattr(net, f"{prefix}_{field}")), (prefix, part)
        assert _close(row["score"], net.score)
        assert row["flags"] == ";".join(net.flags)
        assert row["is_reference"] == ("true" if net.is_reference else "false")
    mine = next(r for r in rows if int(r["id"]) == world.pub.pk)
    assert mine["owner"] == "alice" and mine["paper_url"] == "https://a.example/p"
    assert (mine["threat_norm"], mine["threat_epsilon"]) == ("l2", "1.5")
    # A cell a spreadsheet would run as a formula is defused; JSON keeps the text as it is.
    assert mine["architecture"] == "'=cmd|' /C calc'!A0"
    assert next(r for r in data["networks"] if r["id"] == world.pub.pk)["model_card"]["architecture"].startswith("=cmd")


def test_leaderboard_download_follows_the_filters(client, world) -> None:
    bench = world.pub.benchmark
    response = client.get(f"/api/benchmarks/{bench.name}/leaderboard.csv", {"kind": "references", "sort": "name"})
    names = [r["name"] for r in _csv(response)]
    refs = sorted(Network.objects.filter(benchmark=bench, is_reference=True).values_list("name", flat=True), key=str.casefold)
    assert names == refs
    data = client.get(f"/api/benchmarks/{bench.name}/leaderboard.json", {"q": "alice"}).json()
    assert [r["name"] for r in data["networks"]] == ["alice-public"] and data["filters"] == {"q": "alice"}
    bad = client.get(f"/api/benchmarks/{bench.name}/leaderboard.csv", {"level_min": "x"})
    assert bad.status_code == 400 and "level_min" in bad.json()["parameters"]
    assert client.get("/api/benchmarks/nope/leaderboard.csv").status_code == 404


# --------------------------------------------------------------------------- matrix


@pytest.mark.parametrize("role", ["anon", "owner"])
def test_matrix_csv_and_json_hold_the_stored_accuracies(client, world, role) -> None:
    bench = world.pub.benchmark
    as_csv = _get(client, world, role, f"/api/benchmarks/{bench.name}/matrix.csv")
    as_json = _get(client, world, role, f"/api/benchmarks/{bench.name}/matrix.json")
    assert _filename(as_csv) == "matrix-mnist-5k.csv" and _filename(as_json) == "matrix-mnist-5k.json"
    table = list(csv.reader(io.StringIO(as_csv.content.decode())))
    head, body = table[0], table[1:]
    ids = [int(h.split(":", 1)[0]) for h in head[2:]]
    assert [int(r[0]) for r in body] == ids == [n["id"] for n in json.loads(as_json.content)["networks"]]
    assert (world.priv.pk in ids) == (role == "owner")
    stored = {(e.network_id, e.source_id): e.accuracy for e in Evaluation.objects.filter(kind="adversarial")}
    checked = 0
    for line in body:
        a = int(line[0])
        assert line[1] == Network.objects.get(pk=a).name
        for b, text in zip(ids, line[2:]):
            if a == b:
                adv = AdversarialDataset.objects.get(network_id=a)
                expected = adv.whitebox_correct / adv.total  # the diagonal: white-box accuracy
            else:
                expected = stored[(a, b)]
            assert abs(float(text) - expected) < 1e-6
            checked += 1
    assert checked == len(ids) ** 2 >= 9


# --------------------------------------------------------------------------- one network's results


OWN_OR_STAFF = {"anon": 404, "owner": 200, "other": 404, "staff": 200}
EVERYONE = {"anon": 200, "owner": 200, "other": 200, "staff": 200}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("which, expected", [("pub", EVERYONE), ("priv", OWN_OR_STAFF), ("ref", EVERYONE)])
def test_results_download_follows_the_page_rule(client, world, role, which, expected) -> None:
    net = getattr(world, which)
    for ext in ("json", "csv"):
        response = _get(client, world, role, f"/api/networks/{net.pk}/results.{ext}")
        assert response.status_code == expected[role], (ext, response.status_code)
        if response.status_code == 404:
            assert response["Content-Type"] == "application/json"  # JSON error, never the HTML page
    # The same answer as the network's page, and through a session as through a token.
    if world.user(role):
        client.force_login(world.user(role))
    assert client.get(f"/networks/{net.pk}/").status_code == expected[role]
    assert client.get(f"/api/networks/{net.pk}/results.csv").status_code == expected[role]


def test_results_json_and_csv_hold_the_stored_numbers(client, world) -> None:
    net = world.pub
    benchmark_rank(benchmark=net.benchmark)  # levels for the uploads of the world
    Network.objects.filter(pk=net.pk).update(flags=["probabilities"], flag_notes={"probabilities": "sums to 1"})
    net.refresh_from_db()
    data = client.get(f"/api/networks/{net.pk}/results.json").json()
    as_csv = client.get(f"/api/networks/{net.pk}/results.csv")
    assert _filename(as_csv) == f"results-mnist-5k-network-{net.pk}.csv"
    rows = _csv(as_csv)
    assert net.level is not None
    assert data["network"]["level"] == net.level and data["network"]["flags"] == ["probabilities"]
    assert data["network"]["flag_notes"] == {"probabilities": "sums to 1"}
    by = {r["measure"]: r for r in rows if r["measure"] not in ("row", "column")}
    assert by["level"]["value"] == str(net.level) and by["flags"]["value"] == "probabilities"
    assert _close(by["score"]["value"], net.score)
    for kind in ("clean", "universal"):
        e = Evaluation.objects.get(network=net, kind=kind)
        assert data["accuracies"][kind] == {"value": net.__dict__[f"{kind}_accuracy"], "low": e.low, "high": e.high,
                                            "correct": e.correct, "total": e.total}
        assert abs(e.accuracy - getattr(net, f"{kind}_accuracy")) < 1e-12
        line = by[f"{kind}_accuracy"]
        assert (int(line["correct"]), int(line["total"])) == (e.correct, e.total) and _close(line["low"], e.low)
    adv = AdversarialDataset.objects.get(network=net)
    assert data["accuracies"]["whitebox"]["correct"] == adv.whitebox_correct
    assert by["whitebox_accuracy"]["attack_id"] == str(net.pk)
    # Its row (it on others' attacks) and column (others on its attack), anonymous view:
    # the private network is in neither.
    row = {int(r["attack_id"]): r for r in rows if r["measure"] == "row"}
    col = {int(r["evaluated_id"]): r for r in rows if r["measure"] == "column"}
    stored_row = {e.source_id: e for e in Evaluation.objects.filter(network=net, source__isnull=False)}
    stored_col = {e.network_id: e for e in Evaluation.objects.filter(source=net)}
    assert world.priv.pk in stored_col and world.priv.pk not in col
    assert set(row) == {pk for pk in stored_row if pk != world.priv.pk}
    assert set(col) == {pk for pk in stored_col if pk != world.priv.pk}
    for pk, line in row.items():
        e = stored_row[pk]
        assert _close(line["value"], e.accuracy) and int(line["correct"]) == e.correct
        assert line["evaluated_id"] == str(net.pk)
    for pk, line in col.items():
        assert _close(line["value"], stored_col[pk].accuracy) and line["attack_id"] == str(net.pk)
    assert {r["attack_of_id"] for r in data["row"]} == set(row)
    # The owner sees the private network's cells too.
    owned = _get(client, world, "owner", f"/api/networks/{net.pk}/results.json").json()
    assert world.priv.pk in {r["evaluated_id"] for r in owned["column"]}
    # The comparisons that decide the level, as on the API detail.
    assert [p["reference_id"] for p in data["pairwise"]] == [p["reference_id"] for p in
                                                              client.get(f"/api/networks/{net.pk}").json()["pairwise"]]


def test_network_page_links_its_results(client, world) -> None:
    html = client.get(f"/networks/{world.pub.pk}/").content.decode()
    assert f'href="/api/networks/{world.pub.pk}/results.json"' in html
    assert f'href="/api/networks/{world.pub.pk}/results.csv"' in html


# --------------------------------------------------------------------------- citation


def _bib_fields(text: str) -> dict[str, str]:
    assert text.startswith("@misc{") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")  # balanced: every special character escaped
    return dict(re.findall(r"^\s+(\w+)\s+= \{(.*)\},?$", text, flags=re.M))


def test_bibtex_entry(client, world) -> None:
    bench = world.pub.benchmark
    response = client.get(f"/api/benchmarks/{bench.name}/cite.bib")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/x-bibtex")
    assert _filename(response) == "mnist-5k.bib"
    text = response.content.decode()
    assert text.splitlines()[0] == "@misc{robustnessladder-mnist5k,"
    fields = _bib_fields(text)
    assert fields["year"] == f"{bench.ranked_at:%Y}"
    assert fields["howpublished"] == r"\url{http://testserver/benchmark/}"
    assert f"{bench.eval_size} eval images" in fields["note"]
    assert f"\\epsilon = {bench.epsilon:g}" in fields["note"] and f"{bench.steps} steps" in fields["note"]
    assert f"a ladder of {len(bench.ladder)} reference defenses" in fields["note"]
    # The benchmark page shows the same entry with a copy button.
    page = client.get("/benchmark/").content.decode()
    shown = re.search(r'<textarea id="cite-bib"[^>]*>(.*?)</textarea>', page, flags=re.S).group(1)
    import html as htmlib

    assert htmlib.unescape(shown) == text
    assert 'data-copy="cite-bib"' in page and f'href="/api/benchmarks/{bench.name}/cite.bib"' in page
    assert client.get("/api/benchmarks/nope/cite.bib").status_code == 404


def test_bibtex_escapes_a_hostile_title(world) -> None:
    bench = world.pub.benchmark
    bench.title = "50% of {evil} \\input{/etc/passwd} & co_1 #2 ~x ^y $z$"
    text = exports.benchmark_bibtex(benchmark=bench, url="http://h/benchmark/?a=1%2")
    fields = _bib_fields(text)
    assert r"50\% of \{evil\} \textbackslash{}input\{/etc/passwd\} \& co\_1 \#2 \~{}x \^{}y \$z\$" in fields["title"]
    assert "\\input{" not in text
    assert fields["howpublished"] == r"\url{http://h/benchmark/?a=1\%2}"


# --------------------------------------------------------------------------- links on the pages


def test_pages_link_every_download(client, world) -> None:
    home = client.get("/").content.decode()
    for url in ("/api/benchmarks/mnist-5k/leaderboard.csv", "/api/benchmarks/mnist-5k/leaderboard.json",
                "/api/benchmarks/mnist-5k/matrix.csv", "/api/benchmarks/mnist-5k/matrix.json",
                "/api/benchmarks/mnist-5k/eval-split.csv", "/api/benchmarks/mnist-5k/eval-split.json",
                "/api/benchmarks/mnist-5k/cite.bib"):
        assert f'href="{url}"' in home, url
        assert client.get(url).status_code == 200, url
    matrix = client.get("/matrix/").content.decode()
    assert 'href="/api/benchmarks/mnist-5k/matrix.csv"' in matrix


def test_downloads_of_another_benchmark(client, world) -> None:
    from tests.fakes import fake_suite

    other = fake_suite(references=2, name="other-bench")
    extra = fake_network(other.benchmark, other.labels, name="x", strength=0.5, peers=other.references, seed=4)
    response = client.get("/api/benchmarks/other-bench/leaderboard.csv")
    assert _filename(response) == "leaderboard-other-bench.csv"
    assert {int(r["id"]) for r in _csv(response)} == {n.pk for n in [*other.references, extra]}
    home = client.get("/?benchmark=other-bench").content.decode()
    assert 'href="/api/benchmarks/other-bench/leaderboard.csv"' in home
