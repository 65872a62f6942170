from django.test import Client


def test_home_and_health(town, client: Client) -> None:
    assert client.get("/").status_code == 200
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
