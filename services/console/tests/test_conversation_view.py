"""Replaying a stored conversation: the turns along the selected branch, siblings kept, the branch's answer chosen."""

from __future__ import annotations

from modelhub_console.conversation_view import replay


def _m(id: str, role: str, parent: str = "", children: tuple[str, ...] = (), model: str = "", text: str = "") -> dict:
    return {
        "id": id,
        "role": role,
        "parent_id": parent,
        "children_ids": list(children),
        "model_id": model,
        "content": text,
    }


def test_the_selected_branch_and_every_sibling() -> None:
    conversation = {
        "id": "c",
        "current_message_id": "a3",
        "messages": [
            _m("u1", "user", children=("a1", "b1", "b2"), text="first"),
            _m("a1", "assistant", "u1", model="m", text="A1"),
            _m("b1", "assistant", "u1", ("u2",), model="n", text="B1"),
            _m("b2", "assistant", "u1", model="n", text="B2"),
            _m("u2", "user", "b1", ("a3",), text="second"),
            _m("a3", "assistant", "u2", model="m", text="A3"),
        ],
    }
    turns = replay(conversation)
    assert [t["text"] for t in turns] == ["first", "second"]
    first = {c["model_id"]: c for c in turns[0]["columns"]}
    assert [a["id"] for a in first["n"]["answers"]] == ["b1", "b2"] and first["n"]["index"] == 0
    assert first["m"]["index"] == 0 and turns[1]["columns"][0]["answers"][0]["text"] == "A3"


def test_an_empty_or_cyclic_conversation_gives_no_turns() -> None:
    assert replay({"id": "c", "messages": []}) == []
    looped = {"current_message_id": "x", "messages": [_m("x", "assistant", "y"), _m("y", "user", "x", ("x",))]}
    assert len(replay(looped)) == 1


def test_an_answers_citations_are_replayed_with_their_source_file() -> None:
    answer = _m("a1", "assistant", "u1", model="m", text="A1")
    answer["citations"] = [{"knowledge_id": "k", "file_id": "f", "file_name": "notes.md", "text": "x", "score": 0.5}]
    conversation = {
        "id": "c",
        "current_message_id": "a1",
        "messages": [_m("u1", "user", children=("a1",), text="q"), answer],
    }
    (turn,) = replay(conversation)
    assert turn["columns"][0]["answers"][0]["citations"] == [
        {"file_name": "notes.md", "text": "x", "score": 0.5, "page": 0}
    ]


def test_tool_steps_images_and_the_context_mode_are_replayed() -> None:
    question = _m("u1", "user", children=("a1",), text="q")
    question["image_urls"] = ["http://store/images/c/u1/0?sig=1", "http://store/images/c/u1/1?sig=1"]
    question["context_mode"] = "CONTEXT_MODE_PER_MODEL"
    answer = _m("a1", "assistant", "u1", model="m", text="5")
    answer["tool_steps"] = [
        {
            "call": {"id": "call-1", "tool": "add", "arguments": '{"a": 2, "b": 3}', "server_id": "calc", "step": 1},
            "result": {"id": "call-1", "ok": True, "content": "5", "duration_seconds": 0.003},
        },
        {"call": {"id": "call-2", "tool": "fail", "arguments": "{}", "server_id": "calc", "step": 2}},
    ]
    (turn,) = replay({"id": "c", "current_message_id": "a1", "messages": [question, answer]})
    assert turn["context_mode"] == "per_model"
    assert turn["images"] == [
        "/chat/image?conversation=c&message=u1&n=0",
        "/chat/image?conversation=c&message=u1&n=1",
    ]
    first, second = turn["columns"][0]["answers"][0]["tool_steps"]
    assert first["call"] == {
        "id": "call-1",
        "tool": "add",
        "arguments": '{"a": 2, "b": 3}',
        "server_id": "calc",
        "step": 1,
    }
    assert first["result"] == {
        "id": "call-1",
        "ok": True,
        "content": "5",
        "error_code": "",
        "duration_seconds": 0.003,
        "truncated": False,
    }
    assert second["result"] is None  # a call whose result was never stored


def test_a_turn_without_a_mode_is_shared() -> None:
    conversation = {"id": "c", "current_message_id": "u1", "messages": [_m("u1", "user", text="q")]}
    (turn,) = replay(conversation)
    assert turn["context_mode"] == "shared" and turn["images"] == []
