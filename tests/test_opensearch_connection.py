"""Reaching OpenSearch: TLS verified against a CA file (on by default), basic auth, AWS SigV4, no secrets shown.

A TLS-terminating proxy with a throwaway CA stands between the client and the
test cluster, and records the Authorization header of every request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from pathlib import Path

import fsspec
import pytest

from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.indexers.opensearch.sync import rebuild_index, sync_index
from humantag.indexers.parquet_sink import write_shard
from tests.fixtures.flaky_proxy import FlakyProxy
from humantag.workers.records import LabeledImage

SECRET = "s3cr3t-Passw0rd"


def _tls_files(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA and a server certificate for 127.0.0.1 signed by it; returns (CA file, server context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("humantag test CA")).issuer_name(name("humantag test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


def _dest(tmp_path: Path) -> tuple[fsspec.AbstractFileSystem, OutputLayout]:
    fs = fsspec.filesystem("file")
    layout = OutputLayout(str(tmp_path / "out"))
    now = dt.datetime.now(dt.timezone.utc)
    rows = [LabeledImage(uri=f"/photos/{i}.jpg", status="ok", labeler="image-facts", labeler_version="v", run_id="r",
                         shard_id="s0", labeled_at=now) for i in range(3)]
    write_shard(fs, layout.labels_file("s0"), rows)
    return fs, layout


def test_tls_is_verified_by_default_and_a_ca_file_makes_it_pass(search_index, tmp_path):
    ca_file, context = _tls_files(tmp_path)
    fs, layout = _dest(tmp_path)
    with FlakyProxy(search_index.url, tls=context) as proxy:
        assert proxy.url.startswith("https://")
        unverified = sync_index(OpenSearchSettings(urls=proxy.url, index=search_index.name, max_retries=0), fs, layout, "r")
        assert unverified.error and "unavailable" in unverified.error  # our CA is not trusted: refused
        assert unverified.shards_pending == 1

        verified = sync_index(OpenSearchSettings(urls=proxy.url, index=search_index.name, ca_certs=str(ca_file)),
                              fs, layout, "r")
        assert verified.ok and verified.documents_indexed == 3

        insecure = OpenSearchSettings(urls=proxy.url, index=search_index.name, verify_certs=False)
        assert insecure.client().count(index=search_index.name)["count"] == 3


def test_basic_auth_is_sent_and_never_shown(search_index, tmp_path, caplog):
    import base64

    fs, layout = _dest(tmp_path)
    expected = "Basic " + base64.b64encode(f"indexer:{SECRET}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    with FlakyProxy(search_index.url) as proxy:
        proxy.script.require_authorization = expected
        url_with_credentials = proxy.url.replace("http://", f"http://indexer:{SECRET}@")
        settings = OpenSearchSettings.from_env(urls=url_with_credentials, index=search_index.name)
        assert settings.username == "indexer" and SECRET not in settings.safe_urls() and SECRET not in repr(settings)
        report = sync_index(settings, fs, layout, "r")
        assert report.ok and report.documents_indexed == 3
        assert set(proxy.script.authorizations) == {expected}

        wrong = OpenSearchSettings(urls=proxy.url, index=search_index.name, username="indexer", password="nope", max_retries=0)
        refused = sync_index(wrong, fs, layout, "r2")
    assert refused.error and "401" in refused.error
    with FlakyProxy(search_index.url) as proxy:
        proxy.script.require_authorization = expected
        rebuild = rebuild_index(OpenSearchSettings(urls=proxy.url, index=search_index.name, username="indexer",
                                                   password="nope"), fs, layout, "r3")
    assert rebuild.error and "401" in rebuild.error and not rebuild.ok
    assert SECRET not in caplog.text and "nope" not in (refused.error or "")
    assert SECRET not in refused.model_dump_json()


def test_aws_sigv4_signs_every_request(search_index, tmp_path, monkeypatch):
    fs, layout = _dest(tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with FlakyProxy(search_index.url) as proxy:
        settings = OpenSearchSettings.from_env(urls=proxy.url, index=search_index.name, aws_region="eu-west-1")
        report = sync_index(settings, fs, layout, "r")
    assert report.ok and report.documents_indexed == 3
    assert proxy.script.authorizations
    for header in proxy.script.authorizations:
        assert header.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/es/aws4_request" in header


@pytest.mark.parametrize("url", ["ftp://host:9200", "localhost:9200", "http://"])
def test_bad_urls_are_refused_in_one_line(url):
    from humantag.flows.commands.opensearch_options import opensearch_settings
    from humantag.flows.errors import UserError

    with pytest.raises(UserError, match="OpenSearch URL must be http"):
        opensearch_settings(url)
