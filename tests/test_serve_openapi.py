"""The OpenAPI spec is honest: schemathesis fuzzes every operation against the app in-process.

Its checks include: no 5xx, and every status code, content type and response body as documented.
With access tokens it also checks that every secured operation refuses a request without the
token and one with a wrong token (`ignored_auth`).
"""
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cxrgen.serve import create_app
from cxrgen.testing import StandInGenerator

TOKEN = "a-token-for-schemathesis-0123456789abcdef"
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(StandInGenerator(), max_upload_mb=1))
secured = schemathesis.openapi.from_asgi("/openapi.json",
                                         create_app(StandInGenerator(), max_upload_mb=1, tokens=[TOKEN]))


def _excluded(case) -> list:
    # A schema can say "binary" but not "a decodable PNG, JPEG or DICOM", so random bytes that
    # fit the upload schema are rightly refused with a 4xx: that one check cannot apply there.
    return [positive_data_acceptance] if case.operation.path == "/v1/reports" else []


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_spec(case):
    case.call_and_validate(excluded_checks=_excluded(case))


@secured.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_with_tokens_matches_its_openapi_spec(case):
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.operation.path.startswith("/v1/") else None
    case.call_and_validate(headers=headers, excluded_checks=_excluded(case))
