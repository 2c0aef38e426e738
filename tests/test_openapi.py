"""The committed OpenAPI document is what proto/openapi.py generates from nlu.proto now, and
names exactly the HTTP front end's nlu.v1 routes."""

from __future__ import annotations

import json
import runpy

from openapi_spec_validator import validate

from service.contract.paths import PROJECT_ROOT
from service.http_api.app import HttpApi
from service.lifecycle import Lifecycle
from service.settings import HttpSettings

COMMITTED = PROJECT_ROOT / "proto/nlu/v1/nlu.openapi.json"


def test_the_committed_openapi_document_is_current():
    document = runpy.run_path(str(PROJECT_ROOT / "proto/openapi.py"))["document"]()
    assert json.loads(COMMITTED.read_text()) == document, (
        "stale: run `make openapi` (python proto/openapi.py > proto/nlu/v1/nlu.openapi.json)"
    )


def test_the_document_covers_every_route_but_rasas():
    documented = set(json.loads(COMMITTED.read_text())["paths"])
    routes = {r.path for r in HttpApi(Lifecycle(), HttpSettings(), 16, None).routes()}
    assert documented == routes - {"/model/parse"}


def test_the_document_is_valid_openapi():
    validate(json.loads(COMMITTED.read_text()))
