"""trtcas.cas.redact: no credential survives, whatever the URL's shape; other text is untouched."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from trtcas.cas.redact import redact, userinfo
from trtcas.cas.remote.url import parse_remote_url, redact_url
from trtcas.errors import TrtcasError


def test_the_reported_leak():
    assert redact("http://alice:PW/SECRET@127.0.0.1:1") == "http://***@127.0.0.1:1"
    assert redact_url("http://alice:PW/SECRET@127.0.0.1:1") == "http://***@127.0.0.1:1"


def test_parser_errors_of_a_malformed_url_do_not_leak_the_password():
    # urlsplit reads "alice:PW" as host:port and complains about the port 'PW'
    with pytest.raises(TrtcasError) as err:
        parse_remote_url("http://alice:PW/SECRET@127.0.0.1:1")
    assert "PW" not in str(err.value) and "SECRET" not in str(err.value) and "alice" not in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("https://bob:hunter2@host:1/p", "https://***@host:1/p"),
    ("remote http://u:p%40ss@cache.example:8080/trtcas failed", "remote http://***@cache.example:8080/trtcas failed"),
    ("grpcs://a@b:c@d@farm.internal:443/x", "grpcs://***@farm.internal:443/x"),
    ("s3+tls://KEY:SECRET/with/slashes@minio:9000/bucket", "s3+tls://***@minio:9000/bucket"),
    ("http://user:pw@[fe80::1%25eth0]:8080/ac/1", "http://***@[fe80::1%25eth0]:8080/ac/1"),
    ("redis://:pw@cache:6379/0", "redis://***@cache:6379/0"),
    ("(see 'http://u:p@host.com').", "(see 'http://***@host.com')."),
    ("https://ghp_abc@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("https://h/p?token=abc&x=1#f", "https://h/p?token=***&x=1#f"),
    ("https://h/p?a=1&ACCESS_TOKEN=abc;sig=zz", "https://h/p?a=1&ACCESS_TOKEN=***;sig=***"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("Authorization: Bearer eyJhbGciOi.x.y\nHost: h", "Authorization: Bearer ***\nHost: h"),
    ("proxy-authorization: Basic dXNlcjpwdw==", "proxy-authorization: Basic ***"),
    ("{'Authorization': 'Basic dXNlcjpwdw==', 'Host': 'h'}", "{'Authorization': 'Basic ***', 'Host': 'h'}"),
    ('{"authorization": "tok123"}', '{"authorization": "***"}'),
    ("Authorization: Digest username=\"a\", response=\"b\"", "Authorization: Digest ***"),
    # readable parts stay; '@' that is no userinfo stays
    ("git+https://github.com/pypa/pip.git@22.0#egg=pip", "git+https://github.com/pypa/pip.git@22.0#egg=pip"),
    ("mail bob@example.com about http://host:80/x", "mail bob@example.com about http://host:80/x"),
])
def test_shapes(text, expected):
    assert redact(text) == expected


def test_userinfo_is_what_redact_masks():
    assert userinfo("http://alice:PW/SECRET@127.0.0.1:1/p") == "alice:PW/SECRET"
    assert userinfo("http://host/p") == ""


# ---- properties -------------------------------------------------------------------------

# Userinfo as people paste it: any printable character but whitespace, unencoded or not.
SECRET_CHARS = string.ascii_letters + string.digits + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + "äßø€"
secrets = st.text(SECRET_CHARS, min_size=4, max_size=24)
query_secrets = st.text(string.ascii_letters + string.digits + "-._~%+/=", min_size=4, max_size=24)
schemes = st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True)
labels = st.from_regex(r"[a-z][a-z0-9\-]{0,10}[a-z0-9]", fullmatch=True)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.just("localhost"),
)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
paths = st.lists(st.from_regex(r"[A-Za-z0-9._~\-]{1,8}", fullmatch=True), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts))
params = st.sampled_from(["token", "access_token", "password", "sig", "X-Amz-Signature", "api_key", "client_secret"])
# Surrounding text: anything, but kept apart from the URL the way text keeps words apart.
around = st.text(max_size=30)
separators = st.sampled_from([" ", "\n", "\t", " (", " '", ' "', " <", ": "])
closers = st.sampled_from([" ", "\n", ")", "'", '"', ">", ". ", ", ", ";", ":"])


@st.composite
def urls_with_secrets(draw):
    """(url, the url as a correct redaction shows it, the secrets in it)."""
    user, password, query_secret = draw(secrets), draw(secrets), draw(query_secrets)
    shape = draw(st.sampled_from(["user:password", "user", ":password"]))
    info = {"user:password": f"{user}:{password}", "user": user, ":password": f":{password}"}[shape]
    query = draw(st.one_of(st.just(""), params.map(lambda p: f"?{p}={{}}"), params.map(lambda p: f"?a=1&{p}={{}}&b=2")))
    head = f"{draw(schemes)}://"
    tail = f"@{draw(hosts)}{draw(ports)}{draw(paths)}"
    url = head + info + tail + query.format(query_secret)
    masked = head + "***" + tail + query.format("***")
    hidden = [s for s, present in ((user, shape != ":password"), (password, shape != "user"),
                                   (query_secret, bool(query))) if present]
    return url, masked, hidden


@settings(max_examples=1500, deadline=None)
@given(urls_with_secrets(), around, separators, closers, around)
@example(("http://alice:PW/SECRET@127.0.0.1:1", "http://***@127.0.0.1:1", ["alice", "PW/SECRET"]), "", " ", "", "")
def test_no_secret_survives_in_any_text(url_and_secrets, before, sep, close, after):
    url, masked, hidden = url_and_secrets
    out = redact(f"{before}{sep}{url}{close}{after}")
    for secret in hidden:
        # a secret that the rest of the text happens to contain cannot be told apart from it
        assume(secret not in f"{before}{sep}{masked}{close}{after}")
        assert secret not in out


@settings(max_examples=500, deadline=None)
@given(urls_with_secrets())
def test_scheme_host_port_and_path_stay_readable(url_and_secrets):
    url, _, _ = url_and_secrets
    out = redact(url)
    scheme = url.split("://", 1)[0]
    after_at = url[url.rindex("@") + 1:].split("?", 1)[0]
    assert out.startswith(f"{scheme}://***@") and after_at in out


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Bearer", "Basic", "Token", "bearer"]),
       st.from_regex(r"[A-Za-z0-9\-._~+/]{8,40}=*", fullmatch=True), around, st.sampled_from(["\n", "\r\n"]), around)
def test_authorization_header_values_never_survive(scheme, token, before, eol, after):
    assume(token not in before and token not in after)
    text = f"{before}\nAuthorization: {scheme} {token}{eol}{after}"
    out = redact(text)
    assert token not in out and f"Authorization: {scheme} ***{eol}" in out


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_text_without_urls_or_authorization_is_unchanged(text):
    assume("://" not in text and "authorization" not in text.lower())
    assert redact(text) == text
