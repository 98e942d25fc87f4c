"""A real fedmsg 1.1.7 consumer decodes what the bridge publishes."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.helpers import Server, bridge

FEDMSG = "fedmsg[commands]==1.1.7"


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds a fedmsg virtualenv
def test_fedmsg_tail_decodes_a_message_published_with_bridge_log(fedmsg_tail, state_dir, tmp_path):
    server = Server(state_dir).start()
    config = tmp_path / "fedmsg-config.py"
    config.write_text(
        "config = dict(\n"
        "    topic_prefix='org.debian',\n"
        "    environment='dev',\n"
        f"    endpoints={{'debian-bus-bridge.test': [{server.publish!r}]}},\n"
        "    sign_messages=False,\n"
        "    validate_signatures=False,\n"
        ")\n"
    )
    out = tmp_path / "fedmsg-tail.out"
    with open(out, "wb") as sink:
        tail = subprocess.Popen(
            [str(fedmsg_tail), "--no-validate", "--config-filename", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        found = False
        for n in range(40):  # a SUB socket misses what is sent before it has joined: repeat
            body = f'{{"greeting": "hello from the bridge", "n": {n}}}'
            assert (
                bridge(
                    "--state-dir", str(state_dir), "log", "--topic", "bridge.hello", body
                ).returncode
                == 0
            )
            time.sleep(0.5)
            text = out.read_text(errors="replace")
            if "org.debian.dev.bridge.hello" in text and "hello from the bridge" in text:
                found = True
                break
    finally:
        tail.terminate()
        tail.wait(10)
        server.stop()
    text = out.read_text(errors="replace")
    assert found, f"fedmsg-tail printed: {text[-3000:]}"
    assert "'topic': 'org.debian.dev.bridge.hello'" in text
    assert "'msg': {'greeting': 'hello from the bridge'" in text
    assert "Traceback" not in text
