"""The network-refusal fixture really refuses, so the suite passing proves offline operation."""

import socket

import pytest


def test_outbound_connect_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError, match="refused"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_dns_is_refused():
    with pytest.raises(OSError):
        socket.getaddrinfo("pypi.org", 443)


def test_ultralytics_configured_offline(tmp_path):
    import os

    from ultralytics.utils import ONLINE, USER_CONFIG_DIR

    assert os.environ["YOLO_OFFLINE"] == "1"
    assert ONLINE is False
    assert (USER_CONFIG_DIR / "Arial.ttf").is_file()
    assert not str(USER_CONFIG_DIR).startswith(os.path.expanduser("~/.config"))
