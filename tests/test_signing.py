"""Signed envelopes: a real fedmsg 1.1.7 consumer with ``validate_signatures`` and the
tests' own CA accepts what the bridge signs, and refuses an envelope altered in transit or
signed with a revoked certificate."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bridge.errors import ConfigError
from bridge.sinks.signing import EnvelopeSigner, signer_of
from tests.helpers import Server, Subscriber, bridge, cached_venv, config_file, free_port

# fedmsg's X.509 check needs cryptography and pyOpenSSL; pyOpenSSL 24.3 removed the CRL
# functions fedmsg 1.1.7 calls, and 24.2 wants cryptography below 44.
FEDMSG_CRYPTO = [
    "fedmsg[commands,crypto_ng]==1.1.7",
    "pyOpenSSL==24.2.1",
    "cryptography>=41.0.5,<44",
]
DAY = datetime.timedelta(days=1)
ALTERED, REVOKED = "ALTERED IN TRANSIT", "SIGNED WITH A REVOKED CERT"
TAMPERED_GREETINGS = (ALTERED, REVOKED)


@pytest.fixture(scope="session")
def fedmsg_validating_tail() -> Path:
    """``fedmsg-tail`` of fedmsg 1.1.7 with its X.509 backend, in a cached virtualenv."""
    return cached_venv("fedmsg-1.1.7-crypto", *FEDMSG_CRYPTO) / "fedmsg-tail"


class CA:
    """A certificate authority of the test's own, with a CRL."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge test CA")])
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.revoked: list[int] = []

    def issue(self, common_name: str, serial: int) -> tuple[Path, Path]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
            .sign(self.key, hashes.SHA256())
        )
        key_path = self.folder / f"{common_name}.key"
        cert_path = self.folder / f"{common_name}.crt"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

    def files(self) -> tuple[Path, Path]:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.name)
            .last_update(now - DAY)
            .next_update(now + 7 * DAY)
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - DAY)
                .build()
            )
        ca_path, crl_path = self.folder / "ca.crt", self.folder / "crl.pem"
        ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        crl_path.write_bytes(
            builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        return ca_path, crl_path


def accepted_messages(out: Path) -> str:
    """The messages fedmsg-tail accepted: it logs each at INFO from fedmsg.commands."""
    lines = out.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "][fedmsg.commands" in line)


def test_signing_config_is_checked(tmp_path):
    ca = CA(tmp_path)
    key, cert = ca.issue("bridge.example", 2)
    other_key, _ = ca.issue("other.example", 3)
    assert signer_of("", "") is None
    with pytest.raises(ConfigError, match="both key and certificate"):
        signer_of(str(key), "")
    with pytest.raises(ConfigError, match="not for this key"):
        EnvelopeSigner(other_key, cert)
    config = config_file(
        tmp_path, top=f'[bus.signing]\nkey = "{key}"\ncertificate = "{tmp_path}/nope"\n'
    )
    result = bridge("--config", str(config), "status")
    assert result.returncode == 2 and b"cannot load the key or certificate" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run builds a fedmsg virtualenv
def test_a_validating_fedmsg_consumer_accepts_signed_and_refuses_altered_envelopes(
    fedmsg_validating_tail, tmp_path
):
    ca = CA(tmp_path)
    key, cert = ca.issue("debian-bus-bridge.test", 2)
    revoked_key, revoked_cert = ca.issue("stolen.test", 3)
    ca.revoked.append(3)
    ca_file, crl_file = ca.files()
    config = config_file(tmp_path, top=f'[bus.signing]\nkey = "{key}"\ncertificate = "{cert}"\n')
    state = tmp_path / "state"
    server = Server(state, config=config).start()
    tamper_endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    tamper = context.socket(zmq.PUB)
    tamper.bind(tamper_endpoint)
    fedmsg_config = tmp_path / "fedmsg-config.py"
    fedmsg_config.write_text(
        "config = dict(\n"
        "    topic_prefix='org.debian', environment='dev',\n"
        f"    endpoints={{'bridge': [{server.publish!r}], 'tamper': [{tamper_endpoint!r}]}},\n"
        "    sign_messages=False, validate_signatures=True,\n"
        f"    ca_cert_location={str(ca_file)!r}, crl_location={str(crl_file)!r},\n"
        ")\n"
    )
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with open(out, "wb") as sink, open(err, "wb") as errors:
        tail = subprocess.Popen(
            [str(fedmsg_validating_tail), "--validate", "--config-filename", str(fedmsg_config)],
            stdout=sink,
            stderr=errors,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    sub = Subscriber(server.publish)
    stolen = EnvelopeSigner(revoked_key, revoked_cert)
    try:
        signed_frames = None
        for n in range(60):  # SUB sockets miss what is sent before they join: repeat
            body = json.dumps({"greeting": "signed by the bridge", "n": n})
            assert (
                bridge(
                    "--state-dir",
                    str(state),
                    "--config",
                    str(config),
                    "log",
                    "--topic",
                    "bridge.hello",
                    body,
                ).returncode
                == 0
            )
            got = sub.collect(lambda got: bool(got), timeout=0.5)
            if got and signed_frames is None:
                signed_frames = sub.raw[0]
            if signed_frames is not None:
                topic, envelope = signed_frames
                altered = envelope.replace(b"signed by the bridge", ALTERED.encode())
                tamper.send_multipart([topic, altered])
                unsigned = json.loads(envelope)
                for field in ("crypto", "signature", "certificate"):
                    del unsigned[field]
                unsigned["msg"]["greeting"] = REVOKED
                tamper.send_multipart([topic, stolen.sign(json.dumps(unsigned)).encode()])
            accepted = accepted_messages(out)
            problems = err.read_text(errors="replace")
            # each refusal is one warning naming the message (and Python echoes the warning's
            # source line, so counting "invalid message" would count one refusal twice)
            refused_both = all(text in problems for text in TAMPERED_GREETINGS)
            if "signed by the bridge" in accepted and refused_both:
                break
            time.sleep(0.5)
    finally:
        sub.close()
        tamper.close()
        context.term()
        tail.terminate()
        tail.wait(10)
        server.stop()
    accepted, problems = accepted_messages(out), err.read_text(errors="replace")
    assert signed_frames is not None, "the bridge published nothing"
    envelope = json.loads(signed_frames[1])
    assert envelope["crypto"] == "x509" and envelope["certificate"].endswith("\n")
    assert "signed by the bridge" in accepted, f"fedmsg-tail: {out.read_text()[-2000:]}"
    assert ALTERED not in accepted and "REVOKED" not in accepted
    # refused, each for its reason: the signature no longer matches; the CRL lists the cert
    assert all(text in problems for text in TAMPERED_GREETINGS), problems[-3000:]
    log = out.read_text(errors="replace")
    assert "has an invalid signature" in log and "certificate revoked" in log
