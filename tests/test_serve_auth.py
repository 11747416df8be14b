"""Only the people meant to use the server can: access tokens on /v1/, no open server by accident,
security headers, CORS only when asked, and an access log without tokens, file names or reports.
"""
from __future__ import annotations

import logging
import re
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import cxrgen.commands.serve as serve_command
from cxrgen.cli import main
from cxrgen.serve import create_app
from cxrgen.serve.app import STATIC
from cxrgen.serve.tokens import MIN_CHARS, TokenCheck
from cxrgen.testing import StandInGenerator, png, run_cli_fresh, serving

TOKEN, OTHER = "a" * 10 + "-token-for-the-tests-0123456789", "b" * 40
ORIGIN = "https://viewer.example.org"


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv("CXRGEN_TOKEN", raising=False)


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the command gets as far as loading a model."""
    def refuse(*args):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(serve_command, "load_services", refuse)


@pytest.fixture
def started(monkeypatch):
    """`cxrgen serve` with a stand-in model and uvicorn.run captured: {"app": ..., "host": ..., ...}."""
    import uvicorn

    run = {}
    monkeypatch.setattr(serve_command, "load_services", lambda model, clip: (StandInGenerator(), None))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: run.update(app=app, **kw))
    return run


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(client, headers=None, name="frontal.png"):
    return client.post("/v1/reports", files={"frontal": (name, png())}, headers=headers or {})


# ---- no open server by accident ---------------------------------------------------------

def test_open_host_without_token_is_refused_before_any_model(no_model, capsys):
    start = time.perf_counter()
    assert main(["serve", "--model", "M", "--host", "0.0.0.0"]) == 2
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--token-file" in err and "--new-token" in err, err
    assert took < 5, f"{took:.2f} s"  # a generous bound: the model loader is never called (no_model)


def test_open_host_refusal_imports_neither_torch_nor_the_server(monkeypatch):
    """In a fresh interpreter, as a user runs it: the refusal comes before torch, FastAPI or uvicorn load."""
    monkeypatch.delenv("CXRGEN_TOKEN", raising=False)
    code, err, seconds, heavy = run_cli_fresh(["serve", "--model", "M", "--host", "0.0.0.0"])
    assert (code, heavy) == (2, []), err
    assert "--token-file" in err and "Traceback" not in err
    assert seconds < 10  # sanity only; about 0.5 s on an idle machine


def test_insecure_no_auth_binds_and_warns(started, caplog):
    with caplog.at_level("INFO"):
        assert main(["serve", "--model", "M", "--host", "0.0.0.0", "--insecure-no-auth"]) == 0
    assert started["host"] == "0.0.0.0"
    assert any(r.levelname == "WARNING" and "NO access token" in r.getMessage() for r in caplog.records)
    assert post(TestClient(started["app"])).status_code == 200


def test_insecure_no_auth_with_a_token_is_refused(tmp_path, no_model, capsys):
    (tmp_path / "t").write_text(TOKEN)
    assert main(["serve", "--model", "M", "--token-file", str(tmp_path / "t"), "--insecure-no-auth"]) == 2
    assert "contradict" in capsys.readouterr().err


# ---- tokens ------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["file", "env"])
def test_token_guards_v1_on_loopback(source, tmp_path, monkeypatch, started, caplog):
    argv = ["serve", "--model", "M"]
    if source == "file":
        (tmp_path / "tokens").write_text(f"# alice\n{OTHER}\n\n  {TOKEN}  \n")
        argv += ["--token-file", str(tmp_path / "tokens")]
    else:
        monkeypatch.setenv("CXRGEN_TOKEN", f"{OTHER}\n{TOKEN}")
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert started["host"] == "127.0.0.1" and started["server_header"] is False  # no `server: uvicorn`
    assert "access token required" in caplog.text
    assert TOKEN not in caplog.text and OTHER not in caplog.text
    with TestClient(started["app"]) as c:
        for headers in ({}, bearer("wrong" * 8), bearer(TOKEN[:-1]), bearer(TOKEN + "x"), {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            r = post(c, headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json() == {"detail": "missing or wrong access token: send the header "
                                          "'Authorization: Bearer <token>'"}
        assert post(c, bearer(TOKEN)).status_code == 200
        assert post(c, {"Authorization": f"bearer {OTHER}"}).status_code == 200  # the scheme is case-insensitive
        assert c.post("/v1/simplify", json={"report": "No effusion."}).status_code == 401
        assert c.post("/v1/simplify", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 401  # refused before the body is read
        assert c.get("/v1/info").status_code == 401 and c.get("/v1/nothing-here").status_code == 401
        assert c.get("/v1/info", headers=bearer(TOKEN)).json()["model"] == "M"
        health = c.get("/healthz")
        assert health.status_code == 200 and set(health.json()) == {"status", "version", "in_flight", "capacity"}
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_token_file_beats_the_environment(tmp_path, monkeypatch, started):
    (tmp_path / "tokens").write_text(TOKEN)
    monkeypatch.setenv("CXRGEN_TOKEN", OTHER)
    assert main(["serve", "--model", "M", "--token-file", str(tmp_path / "tokens")]) == 0
    c = TestClient(started["app"])
    assert post(c, bearer(TOKEN)).status_code == 200 and post(c, bearer(OTHER)).status_code == 401


@pytest.mark.parametrize("text, message", [
    ("short-token\n", f"line 1: a token is 11 characters; each must be at least {MIN_CHARS}"),
    (f"{TOKEN}\nshort-token\n", "line 2: a token is 11 characters"),
    (f"{TOKEN} {TOKEN}\n", "holds a space"),
    ("# only a comment\n\n", "holds no token"),
])
def test_bad_token_files_are_refused_at_start(text, message, tmp_path, no_model, capsys):
    (tmp_path / "tokens").write_text(text)
    assert main(["serve", "--model", "M", "--token-file", str(tmp_path / "tokens")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "--new-token" in err, err
    assert "short-token" not in err  # a token, even a bad one, is never echoed


def test_new_token_needs_no_model_and_differs_each_time(capsys):
    tokens = []
    for _ in range(3):
        assert main(["serve", "--new-token"]) == 0
        tokens.append(capsys.readouterr().out.strip())
    assert len(set(tokens)) == 3 and all(len(t) >= MIN_CHARS for t in tokens), tokens
    TokenCheck(tokens)  # each is a valid token
    with pytest.raises(SystemExit, match="2"):
        main(["serve"])
    assert "one of the arguments --model --new-token is required" in capsys.readouterr().err


def test_token_check():
    check = TokenCheck([TOKEN, OTHER])
    assert check.accepts(TOKEN) and check.accepts(OTHER)
    for wrong in (None, "", TOKEN[:-1], TOKEN + TOKEN, TOKEN.upper(), "é" * 40):
        assert not check.accepts(wrong), wrong
    assert not TokenCheck([])
    with pytest.raises(ValueError, match="at least 32"):
        create_app(StandInGenerator(), tokens=["too-short"])


def test_capacity_is_per_server_and_a_refused_request_takes_no_slot():
    app = create_app(StandInGenerator(), capacity=1, tokens=[TOKEN, OTHER])
    with TestClient(app) as c:
        with app.state.services.worker.slot():  # one request of one client holds the only slot
            assert post(c, bearer(OTHER)).status_code == 503  # another client (token) is refused too
            assert post(c).status_code == 401  # no token: refused at the door, before any slot
        assert post(c, bearer(OTHER)).status_code == 200


# ---- headers, CORS, the spec -------------------------------------------------------------

def test_security_headers():
    with TestClient(create_app(StandInGenerator(), tokens=[TOKEN])) as c:
        for path in ("/", "/static/app.js", "/healthz", "/openapi.json", "/v1/info"):
            r = c.get(path)
            assert r.headers["content-security-policy"].startswith("default-src 'self';"), path
            assert "script-src" not in r.headers["content-security-policy"]  # scripts: only self
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
        assert c.get("/v1/info", headers=bearer(TOKEN)).headers["cache-control"] == "no-store"


def test_page_has_no_inline_code():
    """The CSP allows only this server's files: an inline script, style or handler would be blocked."""
    html = (STATIC / "index.html").read_text()
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=|javascript:", html, re.I)


def test_cors_only_for_the_named_origin():
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    with TestClient(create_app(StandInGenerator(), tokens=[TOKEN])) as c:
        assert "access-control-allow-origin" not in c.options("/v1/reports", headers=preflight).headers
        assert "access-control-allow-origin" not in post(c, {**bearer(TOKEN), "Origin": ORIGIN}).headers
    with TestClient(create_app(StandInGenerator(), tokens=[TOKEN], cors_origins=[ORIGIN])) as c:
        r = c.options("/v1/reports", headers=preflight)  # a preflight carries no token
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.options("/v1/reports", headers={**preflight, "Origin": "https://evil.example"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        assert post(c, {"Origin": ORIGIN}).headers["access-control-allow-origin"] == ORIGIN  # its 401 is readable
        assert post(c, {**bearer(TOKEN), "Origin": ORIGIN}).status_code == 200


def test_cli_cors_origin_is_checked(started, no_model, capsys):
    assert main(["serve", "--model", "M", "--cors-origin", "*"]) == 2
    assert "one origin" in capsys.readouterr().err


def test_openapi_declares_the_bearer_scheme_and_401_only_with_tokens():
    spec = create_app(StandInGenerator(), tokens=[TOKEN]).openapi()
    assert spec["components"]["securitySchemes"]["bearer"] == {**spec["components"]["securitySchemes"]["bearer"],
                                                                "type": "http", "scheme": "bearer"}
    for path, operations in spec["paths"].items():
        for op in operations.values():
            secured = path.startswith("/v1/")
            assert ("401" in op["responses"]) == secured and (op.get("security") == [{"bearer": []}]) == secured
    open_spec = create_app(StandInGenerator()).openapi()
    assert "securitySchemes" not in open_spec.get("components", {})
    assert not any("401" in op["responses"] for ops in open_spec["paths"].values() for op in ops.values())


# ---- the access log ----------------------------------------------------------------------

class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_access_log_holds_no_token_file_name_or_report():
    """A real uvicorn with its access log on, as `cxrgen serve` runs it."""
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error", "cxrgen")]
    app = create_app(StandInGenerator(), tokens=[TOKEN])
    with serving(app, log_level="info") as port:
        for logger in loggers:
            logger.addHandler(records)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                ok = post(c, bearer(TOKEN), name="DOE_JANE_1961-04-02.png")
                wrong = post(c, bearer(OTHER), name="DOE_JANE_1961-04-02.png")
                c.post("/v1/simplify", json={"report": "Small left pleural effusion."}, headers=bearer(TOKEN))
        finally:
            for logger in loggers:
                logger.removeHandler(records)
    assert ok.status_code == 200 and wrong.status_code == 401
    log = "\n".join(records.lines)
    assert re.search(r'"POST /v1/reports HTTP/1.1" 200', log) and re.search(r'"POST /v1/reports HTTP/1.1" 401', log)
    for secret in (TOKEN, OTHER, "Bearer", "DOE_JANE", ok.json()["report"], "effusion", ok.json()["plain"]):
        assert secret not in log, secret
