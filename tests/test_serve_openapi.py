"""The OpenAPI spec is honest: schemathesis fuzzes every operation against the app in-process.

Its checks include: no 5xx, and every status code, content type and response body as documented.
With access tokens it also checks that every secured operation refuses a request without the
token and one with a wrong token (`ignored_auth`).
"""
import re
from http import HTTPStatus
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from cxrgen.serve import create_app
from cxrgen.testing import StandInGenerator

TOKEN = "a-token-for-schemathesis-0123456789abcdef"
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(StandInGenerator(), max_upload_mb=1))
secured = schemathesis.openapi.from_asgi("/openapi.json",
                                         create_app(StandInGenerator(), max_upload_mb=1, tokens=[TOKEN]))


def _excluded(case) -> list:
    # A schema can say "binary" but not "a decodable PNG, JPEG or DICOM", so random bytes that
    # fit the upload schema are rightly refused with a 4xx: that check cannot apply there.
    # Nor can "negative data is rejected" on this multipart body: schemathesis marks a case negative
    # when it is generated and keeps the mark when shrinking drops the extra field that made it so,
    # then fails the API for accepting the valid upload left over (2 of 16 runs of 400 examples).
    # tests/test_serve.py sends each invalid multipart body itself (an extra or misnamed
    # field, text for a file, a malformed part header) and checks the 4xx.
    return [positive_data_acceptance, negative_data_rejection] if case.operation.path == "/v1/reports" else []


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_spec(case):
    case.call_and_validate(excluded_checks=_excluded(case))


@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_tokens_matches_its_openapi_spec(case):
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.operation.path.startswith("/v1/") else None
    case.call_and_validate(headers=headers, excluded_checks=_excluded(case))


def test_docs_list_the_specs_status_codes():
    """docs/serve.md's status-code table is the spec of a server with tokens, operation by operation."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    table = {f"{method} {path}": sorted(int(c) for c in codes.split(", "))
             for method, path, codes in re.findall(r"^\| `(GET|POST) (/\S+)` \| ([\d, ]+) \|$", docs, re.M)}
    spec = secured.raw_schema["paths"]
    assert table == {f"{method.upper()} {path}": sorted(int(c) for c in op["responses"])
                     for path, ops in spec.items() for method, op in ops.items()}


def test_every_status_code_named_in_the_docs_is_in_the_spec_and_back():
    """Prose and tables alike: docs/serve.md names exactly the status codes the spec declares."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    number = r"(?<![\d.,:/])\b([2-5]\d\d)\b(?![\d,./])(?!\s*(?:MB|kB|ms|px|tokens|requests|studies|x\b|×|%))"
    named = {int(n) for n in re.findall(number, docs) if int(n) in {s.value for s in HTTPStatus}}
    spec = {int(c) for ops in secured.raw_schema["paths"].values() for op in ops.values() for c in op["responses"]}
    assert named == spec
