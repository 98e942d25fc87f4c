"""``bridge doctor`` on a good setup, and on broken ones: a port taken, a read-only state
directory, a missing keyring. One line per check; exit 1 when any fails."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import bridge, free_port, require


def setup(tmp_path: Path, *, keyring: str | None = None) -> tuple[Path, Path, int]:
    """A config for a bridge that would run here: free ports, its own DKIM keys (no DNS), a
    keyring, and a postfix configuration routing its address to its SMTP port."""
    smtp = free_port()
    ring = tmp_path / "uploaders.gpg"
    ring.write_bytes(b"")
    keys = tmp_path / "dkim.keys"
    keys.write_text("s1._domainkey.bugs.debian.org v=DKIM1; k=rsa; p=AAAA\n")
    postfix = tmp_path / "postfix"
    postfix.mkdir()
    (postfix / "transport").write_text(f"bridge@lists.example.org smtp:[127.0.0.1]:{smtp}\n")
    (postfix / "main.cf").write_text(f"transport_maps = texthash:{postfix / 'transport'}\n")
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp}"\nrecipients = ["bridge@lists.example.org"]\n'
        f'[bus]\npublish = "tcp://127.0.0.1:{free_port()}"\nreplay = "tcp://127.0.0.1:{free_port()}"\n'
        f'[trust]\ndns = false\ndkim_keys = "{keys}"\nkeyrings = ["{keyring or ring}"]\n'
    )
    return config, postfix, smtp


def doctor(config: Path, postfix: Path) -> tuple[int, list[str]]:
    result = bridge("--config", str(config), "doctor", "--postfix-config", str(postfix))
    return result.returncode, result.stdout.decode().splitlines()


def require_postfix() -> None:
    require(shutil.which("postconf") is not None, "postfix is not installed (package postfix)")


def test_a_good_setup_passes_every_check(tmp_path):
    require_postfix()
    config, postfix, smtp = setup(tmp_path)
    code, lines = doctor(config, postfix)
    assert code == 0, lines
    assert all(line.startswith("ok ") for line in lines), lines
    assert any(
        line.startswith("ok   mta route: postfix sends bridge@lists.example.org") for line in lines
    )


def test_a_port_taken_by_another_program_fails(tmp_path):
    require_postfix()
    config, postfix, smtp = setup(tmp_path)
    with socket.create_server(("127.0.0.1", smtp)):
        code, lines = doctor(config, postfix)
    assert code == 1
    assert f"FAIL smtp port: 127.0.0.1:{smtp} is taken by another program" in "\n".join(lines)


def test_a_read_only_state_dir_fails(tmp_path):
    require_postfix()
    config, postfix, _ = setup(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(state)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only filesystem here: {mounted.stderr.decode().strip()}")
    try:
        code, lines = doctor(config, postfix)
    finally:
        subprocess.run(["umount", str(state)], check=True)
    assert code == 1
    assert f"FAIL state dir: {state} is not writable: Read-only file system" in lines


def test_a_missing_keyring_fails(tmp_path):
    require_postfix()
    config, postfix, _ = setup(tmp_path, keyring=str(tmp_path / "gone.gpg"))
    code, lines = doctor(config, postfix)
    assert code == 1
    assert f"FAIL keyring: {tmp_path / 'gone.gpg'} is missing or unreadable" in lines
