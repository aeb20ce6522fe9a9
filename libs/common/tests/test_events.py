import pytest

from modelhub.events.v1 import events_pb2
from modelhub_common.errors import PermanentError
from modelhub_common.events import MODELS, PULLS, decode_envelope, new_envelope


def test_envelope_round_trip_sets_type_time_and_payload() -> None:
    subject = MODELS.subject("created")
    envelope = new_envelope(
        subject,
        actor="alice",
        role="user",
        source="registry",
        payload=events_pb2.ModelChanged(model_id="llama3.1:8b", version=1),
        subject_ids=events_pb2.SubjectIds(model_id="llama3.1:8b"),
    )
    decoded = decode_envelope(envelope.SerializeToString())
    assert subject == "modelhub.models.v1.created"
    assert decoded.type == "models.v1.created"
    assert decoded.WhichOneof("payload") == "model_changed"
    assert decoded.model_changed.model_id == "llama3.1:8b"
    assert decoded.occurred_at.seconds > 0 and decoded.id


def test_stream_areas_cover_their_subjects() -> None:
    assert PULLS.subjects == ["modelhub.pulls.v1.>"]
    assert PULLS.stream == "MODELHUB_PULLS"


def test_a_payload_that_is_not_in_the_envelope_is_refused() -> None:
    with pytest.raises(TypeError):
        new_envelope("modelhub.x.v1.y", actor="a", role="user", source="t", payload=events_pb2.Actor())


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b""])
def test_garbage_is_a_permanent_error(data: bytes) -> None:
    with pytest.raises(PermanentError):
        decode_envelope(data)
