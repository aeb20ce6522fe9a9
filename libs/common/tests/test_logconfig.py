import io
import json
import logging

from modelhub_common.logconfig import configure_logging


def test_json_lines_with_service_and_redacted_secrets() -> None:
    stream = io.StringIO()
    configure_logging("registry", "INFO", stream=stream)
    logging.getLogger("modelhub.test").info("hello", extra={"model_id": "m1", "token": "eyJsecret"})
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["message"] == "hello" and record["service"] == "registry" and record["level"] == "INFO"
    assert record["model_id"] == "m1"
    assert record["token"] == "[redacted]"
    assert "eyJsecret" not in stream.getvalue()
