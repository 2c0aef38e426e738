"""TLS, mutual TLS and bearer tokens against the real server, with a throw-away CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from benchmarks.chat_stub import Script, chat_server
from service.client import Credentials, NluClient
from service.process import ServerProcess, free_port


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate(
    subject: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, **kind
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA (issuer None) or a leaf for 127.0.0.1 (server) or a client, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer_key, signer = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer.subject if signer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if kind.get("server"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if kind.get("client"):
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def write_pair(folder: Path, stem: str, pair) -> tuple[Path, Path]:
    key, cert = pair
    (folder / f"{stem}.key").write_bytes(pem_key(key))
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / f"{stem}.pem", folder / f"{stem}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = certificate("nlu test CA", None)
    paths = {"ca": write_pair(folder, "ca", ca)[0]}
    paths["other_ca"] = write_pair(folder, "other", certificate("another CA", None))[0]
    for stem, kind in (("server", "server"), ("client", "client"), ("rotated", "server")):
        paths[stem], paths[f"{stem}_key"] = write_pair(
            folder, stem, certificate(stem, ca, **{kind: True})
        )
    return paths


def launch(bundle: Path, tmp_path: Path, *flags: str, http: bool = False) -> ServerProcess:
    """The server with a plaintext health-only port, which is what waits for SERVING."""
    health = free_port()
    srv = ServerProcess.launch(
        bundle, tmp_path / "log", "--health-port", str(health), *flags, http=http
    )
    srv.wait_serving(target=f"127.0.0.1:{health}")
    return srv


def refused(client: NluClient) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        client.parse("list airlines")
    client.close()
    return err.value.code()


def until_accepted(client: NluClient, timeout_s: float = 30.0) -> NluClient:
    """The client once its token is accepted: a rotated tokens file is re-read about once a
    second, however busy the machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.info()
            return client
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def served_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate a new TLS connection to the port is shown."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_tls_port_refuses_plaintext_and_a_foreign_ca_and_rotates_without_restart(
    tiny_bundle, tmp_path, pki
):
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert.write_bytes(pki["server"].read_bytes())
    key.write_bytes(pki["server_key"].read_bytes())
    srv = launch(tiny_bundle, tmp_path, "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    try:
        trusted = NluClient(srv.target, credentials=Credentials(tls_ca=pki["ca"]))
        assert trusted.parse("list airlines").intent
        trusted.close()
        assert refused(NluClient(srv.target)) == grpc.StatusCode.UNAVAILABLE
        foreign = NluClient(srv.target, credentials=Credentials(tls_ca=pki["other_ca"]))
        assert refused(foreign) == grpc.StatusCode.UNAVAILABLE
        for line in srv.log().splitlines():  # no gRPC core "Handshake failed" lines
            json.loads(line)
        before = served_serial(srv.port, pki["ca"])
        cert.write_bytes(pki["rotated"].read_bytes())  # a Secret update: same paths, new files
        key.write_bytes(pki["rotated_key"].read_bytes())
        after = served_serial(srv.port, pki["ca"])
        assert before != after  # new connections get the new certificate, no restart
        again = NluClient(srv.target, credentials=Credentials(tls_ca=pki["ca"]))
        assert again.parse("list airlines").intent
        again.close()
    finally:
        assert srv.stop() == 0


def test_mutual_tls_requires_a_client_certificate(tiny_bundle, tmp_path, pki):
    srv = launch(
        tiny_bundle, tmp_path,
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-client-ca-file", str(pki["ca"]),
    )  # fmt: skip
    try:
        anonymous = NluClient(srv.target, credentials=Credentials(tls_ca=pki["ca"]))
        assert refused(anonymous) == grpc.StatusCode.UNAVAILABLE
        known = Credentials(tls_ca=pki["ca"], tls_cert=pki["client"], tls_key=pki["client_key"])
        client = NluClient(srv.target, credentials=known)
        assert client.parse("list airlines").intent
        client.close()
    finally:
        assert srv.stop() == 0


def test_bearer_tokens_are_required_rotatable_and_not_asked_of_probes(tiny_bundle, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-secret\nsecond-secret\n")
    srv = launch(tiny_bundle, tmp_path, "--auth-tokens-file", str(tokens))
    try:
        for token, code in ((None, "missing"), ("wrong", "not valid")):
            client = NluClient(srv.target, credentials=Credentials(token=token))
            with pytest.raises(grpc.RpcError) as err:
                client.parse("list airlines")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert code in err.value.details()
            client.close()
        for token in ("first-secret", "second-secret"):
            client = NluClient(srv.target, credentials=Credentials(token=token))
            assert client.parse("list airlines").intent and client.info().intents
            client.close()
        probe = NluClient(srv.target)
        assert probe.health() == "SERVING"  # health needs no token
        probe.close()
        tokens.write_text("third-secret\n")  # rotation: re-read within about a second
        third = NluClient(srv.target, credentials=Credentials(token="third-secret"))
        assert until_accepted(third).parse("hi").intent
        third.close()
        old = NluClient(srv.target, credentials=Credentials(token="first-secret"))
        assert refused(old) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert srv.stop() == 0
    assert "first-secret" not in srv.log() and "third-secret" not in srv.log()


def test_a_generator_prompt_holds_its_own_request_and_no_other(tiny_bundle, tmp_path):
    """Concurrent and batched requests all routed: each prompt names one request's text only."""
    markers = [
        f"show flights to denver ref{word}" for word in ["qzx", "wvk", "jhy", "plm", "rtb", "gnc"]
    ]
    script = Script(content='{"intent": "atis_flight", "slots": []}')
    with chat_server(script) as url:
        srv = launch(
            tiny_bundle, tmp_path, "--generator-backend", "openai", "--generator-base-url", url,
            "--confidence-threshold", "1.0", "--generator-max-concurrency", "3",
        )  # fmt: skip
        try:
            client = NluClient(srv.target)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(client.parse, markers[:4]))
            client.parse_batch(markers[4:])
            client.close()
        finally:
            assert srv.stop() == 0
    assert len(script.requests) == len(markers)
    seen = []
    for body in script.requests:
        prompt = json.dumps(body["messages"])
        present = [m for m in markers if m.split("ref")[1] in prompt]
        assert len(present) == 1, present
        seen += present
    assert sorted(seen) == sorted(markers)


def test_the_metrics_port_serves_metrics_only_and_no_request_text(tiny_bundle, tmp_path):
    srv = launch(tiny_bundle, tmp_path)
    try:
        client = NluClient(srv.target)
        client.parse("book a flight to denver refqzx")
        client.close()
        base = f"http://127.0.0.1:{srv.metrics_port}"
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200 and "nlu_requests_total" in metrics.text
        assert "refqzx" not in metrics.text
        for path in ("/", "/debug", "/metrics/../admin"):
            assert httpx.get(base + path).status_code == 404
        assert httpx.post(f"{base}/metrics", content=b"x").status_code == 405
    finally:
        assert srv.stop() == 0
    assert "refqzx" not in srv.log()  # request text stays out of the logs by default


def one_line_refusal(bundle: Path, tmp_path: Path, *flags: str) -> str:
    """Start the server with `flags`, which must stop it: exit 1 and a single stderr line (no
    traceback), returned."""
    srv = ServerProcess.launch(bundle, tmp_path / "log", *flags)
    assert srv.process.wait(timeout=60) == 1
    (line,) = [ln for ln in srv.log().splitlines() if not ln.startswith("{")]
    assert "Traceback" not in srv.log()
    return line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            lambda p, t: ["--auth-tokens-file", str(t / "missing")],
            "auth_tokens_file (NLU_AUTH_TOKENS_FILE, --auth-tokens-file) {t}/missing: "
            "No such file or directory",
        ),
        (
            lambda p, t: [
                "--tls-cert-file", str(t / "missing"), "--tls-key-file", str(p["server_key"]),
            ],
            "tls_cert_file (NLU_TLS_CERT_FILE, --tls-cert-file) {t}/missing: No such file",
        ),
        (
            lambda p, t: [
                "--tls-cert-file", str(p["server"]), "--tls-key-file", str(p["client_key"]),
            ],
            "not a PEM certificate and its private key (KEY_VALUES_MISMATCH)",
        ),
        (
            lambda p, t: [
                "--tls-cert-file", str(p["server"]), "--tls-key-file", str(p["server_key"]),
                "--tls-client-ca-file", str(p["server_key"]),
            ],
            "tls_client_ca_file (NLU_TLS_CLIENT_CA_FILE, --tls-client-ca-file)",
        ),
    ],
)  # fmt: skip
def test_a_missing_or_mismatched_security_file_is_named_in_one_line(
    tiny_bundle, tmp_path, pki, flags, expected
):
    line = one_line_refusal(tiny_bundle, tmp_path, *flags(pki, tmp_path))
    assert line.startswith("cannot start the server: ")
    assert expected.format(t=tmp_path) in line
    assert str(tiny_bundle) not in line  # the bundle is not to blame


@pytest.mark.parametrize("setting", ["port", "metrics-port", "health-port", "http-port"])
def test_a_taken_port_is_named_in_one_line(tiny_bundle, tmp_path, setting):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        if setting == "port":  # ServerProcess.launch sets --port itself
            srv = ServerProcess.launch(tiny_bundle, tmp_path / "log", port=number)
            assert srv.process.wait(timeout=60) == 1
            line = srv.log().strip().splitlines()[-1]
        else:
            line = one_line_refusal(tiny_bundle, tmp_path, f"--{setting}", str(number))
    assert f"--{setting}) {number}: cannot listen" in line


def test_a_tokens_file_removed_while_serving_keeps_the_last_good_tokens(tiny_bundle, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-secret\n")
    srv = launch(tiny_bundle, tmp_path, "--auth-tokens-file", str(tokens))
    try:
        client = NluClient(srv.target, credentials=Credentials(token="first-secret"))
        assert client.parse("list airlines").intent
        tokens.unlink()  # a Secret swap gone wrong, a bad deploy
        deadline = time.monotonic() + 30  # re-read about once a second
        while "keeping the last good tokens" not in srv.log() and time.monotonic() < deadline:
            assert client.parse("list airlines").intent
            time.sleep(0.1)
        assert "keeping the last good tokens" in srv.log()
        assert client.parse("list airlines").intent
        tokens.write_text("second-secret\n")  # back: read again
        until_accepted(NluClient(srv.target, credentials=Credentials(token="second-secret")))
        client.close()
    finally:
        assert srv.stop() == 0
    assert srv.log().count("keeping the last good tokens") == 1  # logged once, not per call


def test_http_takes_the_same_tokens_and_not_of_its_probes(tiny_bundle, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-secret\n")
    srv = launch(tiny_bundle, tmp_path, "--auth-tokens-file", str(tokens), http=True)
    url = srv.http_url
    try:
        body = {"text": "list airlines"}
        for headers, problem in (({}, "missing"), ({"authorization": "Bearer wrong"}, "not valid")):
            got = httpx.post(f"{url}/v1/parse", json=body, headers=headers, timeout=10)
            assert got.status_code == 401 and got.headers["www-authenticate"] == "Bearer"
            assert got.json()["error"]["status"] == "UNAUTHENTICATED"
            assert problem in got.json()["error"]["message"]
        good = {"authorization": "Bearer first-secret"}
        assert httpx.post(f"{url}/v1/parse", json=body, headers=good, timeout=10).status_code == 200
        assert httpx.get(f"{url}/v1/model", timeout=10).status_code == 401
        rasa = {"text": "list airlines", "message_id": "c1", "token": None}
        assert httpx.post(f"{url}/model/parse", json=rasa, timeout=10).status_code == 401
        in_body = {**rasa, "token": "first-secret"}  # what Rasa 3.6 sends
        assert httpx.post(f"{url}/model/parse", json=in_body, timeout=10).status_code == 200
        in_query = f"{url}/model/parse?token=first-secret"  # Rasa's token_name parameter
        assert httpx.post(in_query, json=rasa, timeout=10).status_code == 200
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # probes: no token
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        assert srv.stop() == 0
    assert "first-secret" not in srv.log()


def test_http_serves_tls_and_mutual_tls_and_refuses_plaintext(tiny_bundle, tmp_path, pki):
    srv = launch(
        tiny_bundle, tmp_path,
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-client-ca-file", str(pki["ca"]), http=True,
    )  # fmt: skip
    https = f"https://127.0.0.1:{srv.http_port}/v1/parse"
    body = {"text": "list airlines"}
    try:
        with pytest.raises(httpx.TransportError):  # plaintext on the TLS port
            httpx.post(f"http://127.0.0.1:{srv.http_port}/v1/parse", json=body, timeout=5)
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises(httpx.TransportError):  # no client certificate
            httpx.post(https, json=body, verify=trusted, timeout=5)
        with pytest.raises(httpx.TransportError):  # a server certificate from a foreign CA
            httpx.post(
                https,
                json=body,
                verify=ssl.create_default_context(cafile=str(pki["other_ca"])),
                timeout=5,
            )
        trusted.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        got = httpx.post(https, json=body, verify=trusted, timeout=10)
        assert got.status_code == 200 and got.json()["intent"]
    finally:
        assert srv.stop() == 0


def test_the_load_tool_speaks_mutual_tls_and_tokens(tiny_bundle, tmp_path, pki):
    """`python -m benchmarks load` against a deployment's security: mTLS and a bearer token on
    both front ends; without the client certificate every call is counted as refused."""
    from benchmarks.__main__ import main

    tokens = tmp_path / "tokens"
    tokens.write_text("load-secret\n")
    srv = launch(
        tiny_bundle, tmp_path,
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-client-ca-file", str(pki["ca"]), "--auth-tokens-file", str(tokens), http=True,
    )  # fmt: skip
    tls = ["--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client"])]
    tls += ["--tls-key", str(pki["client_key"]), "--token", "load-secret"]
    try:
        for protocol, target in (("grpc", srv.target), ("http", f"127.0.0.1:{srv.http_port}")):
            out = tmp_path / protocol
            args = ["load", "--quick", "--out-dir", str(out), "--target", target]
            assert main([*args, "--protocol", protocol, "--concurrency", "2", *tls]) == 0
            (row,) = json.loads((out / "load.json").read_text())["rows"]
            assert row["errors"] == 0 and row["throughput_rps"] > 0, (protocol, row)
        out = tmp_path / "no-client-cert"
        args = ["load", "--quick", "--out-dir", str(out), "--target", srv.target]
        assert main([*args, "--concurrency", "1", "--tls-ca", str(pki["ca"])]) == 0
        (row,) = json.loads((out / "load.json").read_text())["rows"]
        assert row["throughput_rps"] == 0 and set(row["errors_by_code"]) == {"UNAVAILABLE"}
    finally:
        assert srv.stop() == 0
